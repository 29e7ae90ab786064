"""The Dockerfile, as BuildKit's parser reads it, and the stage/ARG logic on top: tables of good and bad ones.

Whitespace inside a joined continuation is BuildKit's (kept as written), so values are compared
with runs of spaces folded.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from imagegate import DockerfileError
from imagegate.build._dockerfile import parse, parse_file, substitute

DIGEST = "sha256:" + "a" * 64


def test_instructions_carry_their_lines_and_continuations_are_joined() -> None:
    df = parse(
        "# a comment\n"
        "FROM python:3.12-slim AS build\n"
        "\n"
        "RUN apt-get update && \\\n"
        "    # a comment inside the continuation\n"
        "\n"
        "    apt-get install -y gcc\n"
        "COPY --chown=10001:10001 --from=other a b /dst/\n"
        "FROM build\n"
        "USER 10001\n"
    )
    assert [(i.keyword, i.line) for i in df.instructions] == [("FROM", 2), ("RUN", 4), ("COPY", 8), ("FROM", 9), ("USER", 10)]
    run = df.instructions[1]
    assert " ".join(run.value.split()) == "apt-get update && apt-get install -y gcc" and run.end_line == 7
    copy = df.instructions[2]
    assert copy.flags == {"chown": "10001:10001", "from": "other"} and copy.value == "a b /dst/"
    assert [s.name for s in df.stages] == ["build", None]
    assert [s.base for s in df.external_bases()] == ["python:3.12-slim"]  # FROM build is a stage


def test_escape_directive_backtick() -> None:
    df = parse("# escape=`\nFROM busybox:1.36\nRUN echo a `\n  b\nCOPY c:\\dir\\ /x\n")
    assert " ".join(df.instructions[1].value.split()) == "echo a b"
    assert df.instructions[2].value == "c:\\dir\\ /x"


def test_heredocs() -> None:
    df = parse(
        "FROM busybox:1.36\n"
        "RUN <<EOF\n"
        "echo one\n"
        "echo two\n"
        "EOF\n"
        "COPY <<-'CFG' /etc/app.conf\n"
        "\tkey=value\n"
        "\tCFG\n"
        "USER 1\n"
    )
    run, copy = df.instructions[1], df.instructions[2]
    assert run.heredocs == ("echo one\necho two\n",) and run.line == 2 and run.end_line == 5
    assert copy.heredocs == ("\tkey=value\n",)  # as BuildKit parses it; <<- strips tabs when the build runs
    assert df.instructions[3].line == 9


@pytest.mark.parametrize(
    ("dockerfile", "args", "base"),
    [
        ("ARG BASE=busybox:1.36\nFROM $BASE", {}, "busybox:1.36"),
        ("ARG BASE=busybox:1.36\nFROM ${BASE}", {"BASE": f"r/x@{DIGEST}"}, f"r/x@{DIGEST}"),
        ("ARG V=3.12\nFROM python:${V}-slim", {}, "python:3.12-slim"),
        ("ARG V\nFROM python:${V:-3.11}", {}, "python:3.11"),
        ("ARG V=x\nFROM python${V:+:3.10}", {}, "python:3.10"),
        ("ARG REG=r.example.com ARG2=x\nFROM $REG/team/app:1.0.0", {}, "r.example.com/team/app:1.0.0"),
        ("FROM busybox:1.36\nARG LATE=x\nFROM busybox:$LATE", {}, "busybox:"),  # only global ARGs apply
    ],
)
def test_arg_defaults_and_build_args_are_substituted_into_from(dockerfile: str, args: dict[str, str], base: str) -> None:
    assert parse(dockerfile, build_args=args).final.base == base


def test_from_with_an_arg_without_value_is_marked_unresolved() -> None:
    df = parse("ARG BASE\nFROM ${BASE}\n")
    assert df.final.base == "" and df.final.unresolved == ("BASE",)
    assert df.global_args == {"BASE": None}


def test_platform_flag_and_key_values() -> None:
    df = parse('FROM --platform=linux/arm64 busybox:1.36\nENV A=1 B="two words"\nENV LEGACY some value\nARG TOKEN\n')
    assert df.final.platform == "linux/arm64"
    assert df.instructions[1].key_values() == [("A", "1"), ("B", "two words")]
    assert df.instructions[2].key_values() == [("LEGACY", "some value")]
    assert df.instructions[3].key_values() == [("TOKEN", None)]


def test_exec_form() -> None:
    df = parse('FROM busybox:1.36\nENTRYPOINT ["python3", "/app/job.py"]\nCMD echo hi\n')
    assert df.instructions[1].exec_form == ["python3", "/app/job.py"]
    assert df.instructions[2].exec_form is None and df.instructions[2].words == ["echo", "hi"]


@pytest.mark.parametrize(
    ("dockerfile", "line", "message"),
    [
        ("FROM busybox:1.36\nRUNN echo\n", 2, "unknown instruction 'RUNN'"),
        ("RUN echo\nFROM busybox:1.36\n", 1, "first instruction must be FROM"),
        ("ARG X=1\n", 1, "first instruction must be FROM"),
        ("FROM busybox:1.36\nRUN <<EOF\necho\n", 2, "unterminated heredoc"),
        ("FROM busybox:1.36 AS\n", 1, "FROM takes IMAGE [AS NAME]"),
        ("FROM a b c d\n", 1, "FROM takes IMAGE [AS NAME]"),
        ("FROM busybox:1.36\nCOPY --from src /x\n", 2, "flag --from needs a value"),
        ("FROM busybox:1.36\nCOPY --fr@m=x src /x\n", 2, "malformed flag"),
        ("FROM busybox:1.36\nUSER\n", 2, "USER requires at least one argument"),
        ("# escape=x\nFROM busybox:1.36\n", 1, "invalid escape token"),
        ("# escape=`\n# escape=\\\nFROM a:1\n", 2, "only one escape parser directive"),
        ("FROM a:1\nENV A=1 B\n", 2, "Must be of the form: name=value"),
        ('FROM a:1\nCMD ["a", 1]\n', 2, "arrays must be comprised of strings"),
        ("", 0, "no instructions"),
        ("# only a comment\n\n", 0, "no instructions"),
    ],
)
def test_syntax_errors_name_the_line(dockerfile: str, line: int, message: str) -> None:
    with pytest.raises(DockerfileError, match=re.escape(message)) as info:
        parse(dockerfile, path="ctx/Dockerfile")
    assert info.value.line == line and info.value.path == "ctx/Dockerfile"
    if line:
        assert f"ctx/Dockerfile:{line}:" in str(info.value)


def test_missing_dockerfile(tmp_path: Path) -> None:
    with pytest.raises(DockerfileError, match="Dockerfile not found; pass -f PATH"):
        parse_file(tmp_path / "Dockerfile")


def test_substitute_reports_unset_names() -> None:
    assert substitute("$A/${B}:${C:-x}", {"A": "a"}) == ("a/:x", ["B"])
