"""The user grammar, as runc and containerd read it: the table, and properties against Go's rules."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imagegate._user import MAX_UID, go_atoi, is_root, parse_passwd, parse_user, resolve_name, runtime_uid

# value -> (uid the engine sees or None for a name, root?, refused as ambiguous?)
TABLE = [
    ("", None, True, False),
    ("0", 0, True, False),
    ("+0", 0, True, False),
    ("-0", 0, True, False),
    ("000", 0, True, False),
    ("0:0", 0, True, False),
    ("0:1000", 0, True, False),
    ("4294967296", 4294967296, True, False),  # truncated to 32 bits: uid 0
    ("-4294967296", -4294967296, True, False),
    ("root", None, True, False),
    ("root:root", None, True, False),
    ("1000", 1000, False, False),
    ("1000:1000", 1000, False, False),
    ("1000:0", 1000, False, False),
    ("65534", 65534, False, False),
    (str(MAX_UID), MAX_UID, False, False),
    ("+1000", 1000, False, True),
    ("01000", 1000, False, True),
    ("-1", -1, False, True),
    ("2147483648", 2147483648, False, True),
    ("4294968296", 4294968296, False, True),
    ("app", None, False, False),
    ("app:app", None, False, False),
    ("app:0", None, False, False),
    (" 1000", None, False, True),
    ("1000 ", None, False, True),
    ("\t0", None, False, True),
    ("1000:1000:extra", 1000, False, True),
    (":0", None, True, True),
    ("a\u00e9", None, False, True),
    ("-app", None, False, True),
    ("1_000", None, False, False),  # a name to the engine (Python's int() would read 1000: never used here)
    ("\u0661\u0662", None, False, True),  # Arabic-Indic digits: Python's int() reads them, Go does not
]


@pytest.mark.parametrize(("text", "uid", "root", "ambiguous"), TABLE)
def test_the_table(text: str, uid: int | None, root: bool, ambiguous: bool) -> None:
    spec = parse_user(text)
    assert spec.uid == uid
    assert is_root(spec) is root
    assert (spec.problem is not None) is ambiguous, spec.problem


@pytest.mark.parametrize(
    ("text", "value"),
    [("0", 0), ("+7", 7), ("-7", -7), ("007", 7), ("9223372036854775807", 2**63 - 1), ("9223372036854775808", None),
     ("", None), ("+", None), ("1 ", None), ("0x10", None), ("1e3", None), ("1_0", None), ("\u0661", None)],
)
def test_go_atoi(text: str, value: int | None) -> None:
    assert go_atoi(text) == value


@settings(max_examples=500)
@given(st.text(max_size=24))
def test_any_text_the_engine_reads_as_uid_0_is_root_or_refused(text: str) -> None:
    spec = parse_user(text)
    engine_uid = go_atoi(text.partition(":")[0])
    if text.partition(":")[0] == "" or (engine_uid is not None and runtime_uid(engine_uid) == 0):
        assert is_root(spec) or spec.problem is not None


@settings(max_examples=300)
@given(st.integers(min_value=-(2**63), max_value=2**63 - 1), st.sampled_from(["", "+", "0", "00"]))
def test_numeric_spellings_root_iff_zero_mod_2_32(value: int, prefix: str) -> None:
    text = (prefix + str(value)) if value >= 0 else str(value)
    spec = parse_user(text)
    if value % 2**32 == 0:
        assert is_root(spec)
    elif spec.problem is None:
        assert 0 < spec.uid <= MAX_UID  # type: ignore[operator]


def test_passwd_is_read_like_runc() -> None:
    entries = parse_passwd(
        "root:x:0:0::/root:/bin/sh\n  app:x:1000:1000::/app:/bin/sh  \r\n\njunk:x:abc:0::/:/bin/sh\n"
        "dup:x:1002:0::/:/bin/sh\ndup:x:0:0::/:/bin/sh\nshort\nwrap:x:4294967296:0::/:/bin/sh\n"
    )
    assert resolve_name("app", entries).uid == 1000  # type: ignore[union-attr]
    assert resolve_name("junk", entries).uid == 0  # type: ignore[union-attr]  # Atoi error -> 0
    assert resolve_name("dup", entries).uid == 1002  # type: ignore[union-attr]  # first match
    assert resolve_name("short", entries).uid == 0  # type: ignore[union-attr]
    assert runtime_uid(resolve_name("wrap", entries).uid) == 0  # type: ignore[union-attr]
    assert resolve_name("ghost", entries) is None


@pytest.mark.parametrize("space, trimmed", [
    ("\u00a0", True), ("\u0085", True), ("\u2028", True), ("\u3000", True), ("\u2009", True),  # Go's unicode.IsSpace
    ("\x1c", False), ("\x1f", False), ("\u200b", False), ("\ufeff", False),  # Python's isspace or "invisible": not Go's
])
def test_passwd_lines_are_trimmed_exactly_as_go_trims_them(space: str, trimmed: bool) -> None:
    """moby/sys/user trims each line with bytes.TrimSpace: a line "<space>app:x:0:0" before the real app line is
    app (uid 0) to Docker exactly when Go counts <space> as white space."""
    entries = parse_passwd(f"{space}app:x:0:0::/:/bin/sh\napp:x:1000:1000::/app:/bin/sh\n")
    assert resolve_name("app", entries).uid == (0 if trimmed else 1000)  # type: ignore[union-attr]
