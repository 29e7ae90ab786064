"""A Dockerfile parser: instructions with line numbers, stages, and ``FROM`` with ``ARG`` substituted.

It follows BuildKit's parser as far as imagegate needs it: parser directives
(``# escape=``, ``# syntax=``) at the top, the escape character (``\\`` or a
backtick) joining continuation lines, comment and blank lines inside a
continuation skipped, heredocs (``RUN <<EOF`` … ``EOF``, ``<<-``, quoted
delimiters), JSON (exec) and shell forms, and ``--flag=value`` options.
Global ``ARG`` defaults (before the first ``FROM``), overridden by build
arguments, are substituted into ``FROM`` lines (``$V``, ``${V}``,
``${V:-default}``, ``${V:+alt}``).

Pure: no I/O beyond reading the file in :func:`parse_file`.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from imagegate._errors import DockerfileError

INSTRUCTIONS = frozenset(
    "ADD ARG CMD COPY ENTRYPOINT ENV EXPOSE FROM HEALTHCHECK LABEL MAINTAINER ONBUILD "
    "RUN SHELL STOPSIGNAL USER VOLUME WORKDIR".split()
)
_DIRECTIVE = re.compile(r"^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$")
_HEREDOC = re.compile(r"<<(-?)\s*([\"']?)([A-Za-z_][A-Za-z0-9_]*)\2")
_FLAG = re.compile(r"^--([a-z][a-z0-9-]*)(?:=(\S*))?$")
_BOOLEAN_FLAGS = frozenset({"link", "parents", "keep-git-dir"})
_VAR = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-+])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))")


@dataclass(frozen=True)
class Instruction:
    """One instruction: ``keyword`` upper-cased, ``value`` the text after flags, 1-based lines."""

    keyword: str
    value: str
    line: int
    end_line: int
    flags: Mapping[str, str] = field(default_factory=dict)
    heredocs: tuple[str, ...] = ()
    original: str = ""

    @property
    def exec_form(self) -> list[str] | None:
        """The JSON array of an exec-form instruction (``["python3", "job.py"]``), else None."""
        text = self.value.strip()
        if not text.startswith("["):
            return None
        try:
            parsed = json.loads(text)
        except ValueError:
            return None
        return parsed if isinstance(parsed, list) and all(isinstance(x, str) for x in parsed) else None

    @property
    def words(self) -> list[str]:
        form = self.exec_form
        return form if form is not None else self.value.split()

    def key_values(self) -> list[tuple[str, str | None]]:
        """ENV/ARG/LABEL pairs: ``K=V K2="v 2"`` or the legacy ``K V`` form; ``ARG K`` gives (K, None)."""
        text = self.value.strip()
        if self.keyword == "ENV" and "=" not in text.split(None, 1)[0]:
            parts = text.split(None, 1)
            return [(parts[0], parts[1] if len(parts) > 1 else "")]
        pairs: list[tuple[str, str | None]] = []
        for token in _shell_words(text):
            if "=" in token:
                key, value = token.split("=", 1)
                pairs.append((key, value))
            else:
                pairs.append((token, None))
        return pairs


@dataclass(frozen=True)
class Stage:
    """A ``FROM`` and the instructions up to the next one."""

    index: int
    base: str  # as written, with variables substituted
    base_raw: str  # as written
    name: str | None
    platform: str | None
    line: int
    instructions: tuple[Instruction, ...]
    unresolved: tuple[str, ...] = ()  # variables in FROM with no value


@dataclass(frozen=True)
class Dockerfile:
    """A parsed Dockerfile."""

    path: str
    instructions: tuple[Instruction, ...]
    stages: tuple[Stage, ...]
    global_args: Mapping[str, str | None]
    escape: str = "\\"
    text: str = ""

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def stage_names(self) -> set[str]:
        return {s.name.lower() for s in self.stages if s.name}

    def external_bases(self) -> list[Stage]:
        """Stages whose ``FROM`` is an image (not ``scratch``, not an earlier stage)."""
        names: set[str] = set()
        out: list[Stage] = []
        for stage in self.stages:
            if stage.base.lower() != "scratch" and stage.base.lower() not in names:
                out.append(stage)
            if stage.name:
                names.add(stage.name.lower())
        return out


def parse_file(path: str | os.PathLike[str], build_args: Mapping[str, str] | None = None) -> Dockerfile:
    """Read and parse *path*; a missing or unreadable file is a :class:`DockerfileError`."""
    file = Path(path)
    try:
        text = file.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise DockerfileError(
            "Dockerfile not found; pass -f PATH (dockerfile=…) or add a Dockerfile to the context", path=str(file)
        ) from None
    except IsADirectoryError:
        raise DockerfileError("is a directory, not a Dockerfile", path=str(file)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DockerfileError(f"cannot read the Dockerfile: {exc}", path=str(file)) from None
    return parse(text, path=str(file), build_args=build_args)


def parse(text: str, *, path: str = "Dockerfile", build_args: Mapping[str, str] | None = None) -> Dockerfile:
    """Parse Dockerfile *text*; raise :class:`DockerfileError` naming the line for a syntax error."""
    lines = text.removeprefix("\ufeff").splitlines()
    escape, start = _directives(lines, path)
    instructions = _instructions(lines, start, escape, path)
    if not instructions:
        raise DockerfileError("the Dockerfile has no instructions; it needs at least a FROM", path=path)
    return _stages(instructions, path, escape, text, dict(build_args or {}))


def _directives(lines: list[str], path: str) -> tuple[str, int]:
    escape, i = "\\", 0
    seen: set[str] = set()
    while i < len(lines):
        match = _DIRECTIVE.match(lines[i])
        if not match:
            break
        name, value = match.group(1).lower(), match.group(2)
        if name in seen:
            raise DockerfileError(f"parser directive {name!r} given twice", path=path, line=i + 1)
        seen.add(name)
        if name == "escape":
            if value not in ("\\", "`"):
                raise DockerfileError(f"invalid escape character {value!r}; use \\ or `", path=path, line=i + 1)
            escape = value
        i += 1
    return escape, 0


def _instructions(lines: list[str], start: int, escape: str, path: str) -> list[Instruction]:
    out: list[Instruction] = []
    i = start
    n = len(lines)
    while i < n:
        raw = lines[i]
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            i += 1
            continue
        first = i + 1
        parts: list[str] = []
        text = raw.rstrip()
        while True:
            if text.endswith(escape) and not text.endswith(escape * 2):
                parts.append(text[:-1])
                i += 1
                while i < n and (not lines[i].strip() or lines[i].lstrip().startswith("#")):
                    i += 1
                if i >= n:
                    break
                text = lines[i].rstrip()
                continue
            parts.append(text)
            i += 1
            break
        logical = " ".join(p.strip() for p in parts).strip()
        keyword, _, rest = logical.partition(" ")
        keyword_upper = keyword.upper()
        if keyword_upper not in INSTRUCTIONS:
            raise DockerfileError(
                f"unknown instruction {keyword!r}; instructions are {', '.join(sorted(INSTRUCTIONS))}",
                path=path,
                line=first,
            )
        heredocs: list[str] = []
        if keyword_upper in ("RUN", "COPY", "ADD"):
            for match in _HEREDOC.finditer(rest):
                strip_tabs, delimiter = match.group(1) == "-", match.group(3)
                body: list[str] = []
                while True:
                    if i >= n:
                        raise DockerfileError(
                            f"heredoc <<{delimiter} is not terminated; add a line with only {delimiter}",
                            path=path,
                            line=first,
                        )
                    line = lines[i]
                    i += 1
                    if (line.lstrip("\t") if strip_tabs else line) == delimiter:
                        break
                    body.append(line.lstrip("\t") if strip_tabs else line)
                heredocs.append("\n".join(body))
        flags, value = _split_flags(rest.strip(), path, first)
        if keyword_upper in ("FROM", "USER", "WORKDIR", "COPY", "ADD") and not value:
            raise DockerfileError(f"{keyword_upper} requires at least one argument", path=path, line=first)
        out.append(
            Instruction(
                keyword=keyword_upper,
                value=value,
                line=first,
                end_line=i,
                flags=flags,
                heredocs=tuple(heredocs),
                original=logical,
            )
        )
    return out


def _split_flags(rest: str, path: str, line: int) -> tuple[dict[str, str], str]:
    flags: dict[str, str] = {}
    while rest.startswith("--"):
        token, _, remainder = rest.partition(" ")
        match = _FLAG.match(token)
        if not match:
            raise DockerfileError(f"malformed flag {token!r}", path=path, line=line)
        name, value = match.group(1), match.group(2)
        if value is None and name not in _BOOLEAN_FLAGS:
            raise DockerfileError(f"flag --{name} needs a value: --{name}=VALUE", path=path, line=line)
        value = value or ""
        flags[name] = f"{flags[name]},{value}" if name in flags else value
        rest = remainder.lstrip()
    return flags, rest


def _stages(instructions: list[Instruction], path: str, escape: str, text: str, build_args: dict[str, str]) -> Dockerfile:
    global_args: dict[str, str | None] = {}
    index = 0
    while index < len(instructions) and instructions[index].keyword == "ARG":
        for key, value in instructions[index].key_values():
            global_args[key] = value
        index += 1
    if index >= len(instructions) or instructions[index].keyword != "FROM":
        bad = instructions[index] if index < len(instructions) else instructions[-1]
        raise DockerfileError(
            f"the first instruction must be FROM (only ARG may come before it), found {bad.keyword}",
            path=path,
            line=bad.line,
        )
    values = {k: v for k, v in global_args.items() if v is not None}
    values.update({k: v for k, v in build_args.items() if k in global_args})
    stages: list[Stage] = []
    current: Instruction | None = None
    body: list[Instruction] = []

    def close() -> None:
        if current is None:
            return
        words = current.value.split()
        name = None
        if len(words) == 3 and words[1].lower() == "as":
            name = words[2]
        elif len(words) != 1:
            raise DockerfileError(
                f"FROM takes IMAGE [AS NAME], got {current.value!r}", path=path, line=current.line
            )
        base, missing = substitute(words[0], values)
        if not base and not missing:
            raise DockerfileError(
                f"FROM {words[0]} is empty: {', '.join(missing)} has no default; "
                f"pass --build-arg {missing[0] if missing else 'NAME'}=IMAGE@sha256:… or give the ARG a default",
                path=path,
                line=current.line,
            )
        stages.append(
            Stage(
                index=len(stages),
                base=base,
                base_raw=words[0],
                name=name,
                platform=current.flags.get("platform"),
                line=current.line,
                instructions=tuple(body),
                unresolved=tuple(missing),
            )
        )

    for instruction in instructions[index:]:
        if instruction.keyword == "FROM":
            close()
            current, body = instruction, []
        else:
            body.append(instruction)
    close()
    return Dockerfile(
        path=path,
        instructions=tuple(instructions),
        stages=tuple(stages),
        global_args=global_args,
        escape=escape,
        text=text,
    )


def substitute(word: str, values: Mapping[str, str]) -> tuple[str, list[str]]:
    """Expand ``$V``/``${V}``/``${V:-d}``/``${V:+a}`` from *values*; also return the unset names."""
    missing: list[str] = []

    def expand(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(4)
        op, arg = match.group(2), match.group(3) or ""
        value = values.get(name)
        if op in (":-", "-"):
            return value if value else arg
        if op in (":+", "+"):
            return arg if value else ""
        if not value:
            missing.append(name)
            return ""
        return value

    return _VAR.sub(expand, word), missing


def _shell_words(text: str) -> list[str]:
    import shlex

    try:
        return shlex.split(text, posix=True)
    except ValueError:
        return text.split()
