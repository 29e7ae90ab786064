"""What looks like a secret, and how to keep it out of reports. Pure, no I/O.

One rule set for two jobs: the Dockerfile lint (IG009: no secrets in ``ENV``/``ARG``/``LABEL``)
and the reports, where image labels, ``Entrypoint``, ``Cmd`` and ``Healthcheck`` are shown with
secret-looking values replaced by ``<redacted>`` (their names stay, so the report still says
*where* a secret sits). Environment variable values are never read into a report at all.

A name looks secret when one of its words (split on ``_``, ``-``, ``.``) is or ends with a secret
word — ``PGPASSWORD``, ``MYSQL_PWD``, ``DBPASS``, ``GITHUB_TOKEN``, ``AWS_SECRET_ACCESS_KEY``,
``API_KEY`` — unless it names a file that holds the secret (``POSTGRES_PASSWORD_FILE``), or is a
known non-secret (``PWD``, ``OLDPWD``, ``BYPASS``, ``TOKENIZERS_PARALLELISM``).
"""

from __future__ import annotations

import re
from typing import Iterable, Mapping

REDACTED = "<redacted>"

_WORDS = re.compile(r"[^A-Z0-9]+")
_SECRET_ENDINGS = ("PASSWORD", "PASSWD", "PASSPHRASE", "SECRET", "SECRETS", "TOKEN", "TOKENS", "APIKEY",
                   "ACCESSKEY", "SECRETKEY", "PRIVATEKEY", "CREDENTIAL", "CREDENTIALS", "PASS", "PWD")
_KEY_QUALIFIERS = frozenset({"API", "ACCESS", "SECRET", "PRIVATE", "ENCRYPTION", "SIGNING", "MASTER", "CLIENT", "AUTH"})
_NOT_SECRET_WORDS = frozenset({"BYPASS", "COMPASS", "SURPASS", "TRESPASS", "ENCOMPASS", "OVERPASS", "UNDERPASS",
                               "OLDPWD", "PASSTHROUGH"})
_NOT_SECRET_NAMES = frozenset({"PWD", "OLDPWD"})
_REFERENCE_SUFFIXES = ("FILE", "FILES", "PATH", "DIR")

SECRET_VALUE = re.compile(
    r"AKIA[0-9A-Z]{16}|ASIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{30,}|github_pat_\w{20,}|glpat-[\w-]{20,}"
    r"|xox[abpr]-[\w-]{10,}|sk-[A-Za-z0-9_-]{20,}|-----BEGIN [A-Z ]*PRIVATE KEY|eyJ[\w-]{10,}\.eyJ[\w-]{10,}\.[\w-]*"
    r"|(?<=://)[^/\s:@]+:[^/\s@]+(?=@)"
)
_ASSIGNMENT = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_.-]*)=(?P<value>\"[^\"]*\"|'[^']*'|\S*)")
_FLAG = re.compile(r"^(?P<flag>--?[A-Za-z][A-Za-z0-9_.-]*)(?:=(?P<value>.*))?$", re.DOTALL)


def looks_secret_name(name: str) -> bool:
    """True for names like ``PGPASSWORD``, ``MYSQL_PWD``, ``DBPASS``, ``api-key``, ``--token``."""
    upper = name.upper().lstrip("-")
    words = [w for w in _WORDS.split(upper) if w]
    if not words or upper in _NOT_SECRET_NAMES:
        return False
    if words[-1] in _REFERENCE_SUFFIXES and len(words) > 1:
        return False  # POSTGRES_PASSWORD_FILE: the path of the secret, not the secret
    for index, word in enumerate(words):
        if word in _NOT_SECRET_WORDS:
            continue
        if word == "PWD":
            if len(words) > 1:
                return True  # MYSQL_PWD; PWD alone is the working directory
            continue
        if word in ("AUTH", "CREDS") or word.endswith(_SECRET_ENDINGS):
            return True
        if word == "KEY" and index and words[index - 1] in _KEY_QUALIFIERS:
            return True
    return False


def looks_secret_value(value: str) -> bool:
    """True for values shaped like credentials: cloud keys, tokens, private keys, ``user:pass@`` URLs."""
    return SECRET_VALUE.search(value) is not None


def redact_text(text: str) -> str:
    """*text* with credential-shaped values and ``SECRET_NAME=value`` assignments redacted."""
    text = SECRET_VALUE.sub(REDACTED, text)

    def assignment(match: re.Match[str]) -> str:
        if looks_secret_name(match.group("name")) and match.group("value") not in ("", REDACTED):
            return f"{match.group('name')}={REDACTED}"
        return match.group(0)

    text = _ASSIGNMENT.sub(assignment, text)
    return _redact_flags_in_text(text)


def _redact_flags_in_text(text: str) -> str:
    words = text.split(" ")
    out = list(words)
    for index, word in enumerate(words[:-1]):
        match = _FLAG.match(word)
        if match and match.group("value") is None and looks_secret_name(match.group("flag")) and words[index + 1]:
            if not words[index + 1].startswith("-"):
                out[index + 1] = REDACTED
    return " ".join(out)


def redact_argv(argv: Iterable[str] | None) -> tuple[str, ...] | None:
    """An ``Entrypoint``/``Cmd``/``Healthcheck`` list with secrets redacted: ``--password=x``,
    ``--token x``, ``PGPASSWORD=x`` and credential-shaped values (also inside ``sh -c`` strings)."""
    if argv is None:
        return None
    items = list(argv)
    out: list[str] = []
    secret_next = False
    for item in items:
        if secret_next and not item.startswith("-"):
            out.append(REDACTED)
            secret_next = False
            continue
        secret_next = False
        flag = _FLAG.match(item)
        if flag and looks_secret_name(flag.group("flag")):
            if flag.group("value") is None:
                secret_next = True
                out.append(item)
            else:
                out.append(f"{flag.group('flag')}={REDACTED}")
            continue
        out.append(redact_text(item))
    return tuple(out)


def redact_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """Labels with the values of secret-named keys, and credential-shaped values, redacted."""
    return {key: REDACTED if looks_secret_name(key) else redact_text(value) for key, value in labels.items()}
