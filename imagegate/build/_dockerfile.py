"""A Dockerfile, parsed by BuildKit's own parser: instructions with lines, stages, ``FROM`` with ``ARG``.

The tokenizing — parser directives (``# escape=``, ``# syntax=``), line continuations, comments
inside them, heredocs, JSON (exec) and shell forms, flags — is BuildKit's, through the
``dockerfile`` package (the official Go parser, compiled in): the Dockerfile is read exactly as
``docker build`` reads it, not as a second implementation guesses. On top of it, imagegate keeps
only what BuildKit leaves to the build step: known instructions and their arguments, flags
(``--name=value``), the stages, and global ``ARG`` defaults (overridden by build arguments)
substituted into ``FROM`` lines (``$V``, ``${V}``, ``${V:-default}``, ``${V:+alt}``).

Pure, but for reading the file in :func:`parse_file` (a regular file, at most 1 MiB: a FIFO or
a device named ``Dockerfile`` is refused, never waited on).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import dockerfile as buildkit

from imagegate._errors import DockerfileError
from imagegate.build._files import read_regular

INSTRUCTIONS = frozenset(
    "ADD ARG CMD COPY ENTRYPOINT ENV EXPOSE FROM HEALTHCHECK LABEL MAINTAINER ONBUILD "
    "RUN SHELL STOPSIGNAL USER VOLUME WORKDIR".split()
)
MAX_DOCKERFILE = 1 << 20
_FLAG = re.compile(r"^--([a-z][a-z0-9-]*)(?:=(.*))?$", re.DOTALL)
_BOOLEAN_FLAGS = frozenset({"link", "parents", "keep-git-dir"})
_NEEDS_ARGUMENTS = frozenset({"FROM", "USER", "WORKDIR", "COPY", "ADD"})
_VAR = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-+])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))")


@dataclass(frozen=True)
class Instruction:
    """One instruction: ``keyword`` upper-cased, ``args`` as BuildKit split them, 1-based lines.

    ``value`` is the arguments as one string (for messages and pattern checks); ``words`` the
    arguments as a list (the JSON array for the exec form); ``heredocs`` the bodies of ``<<EOF``.
    """

    keyword: str
    args: tuple[str, ...]
    line: int
    end_line: int
    flags: Mapping[str, str] = field(default_factory=dict)
    heredocs: tuple[str, ...] = ()
    original: str = ""
    json_form: bool = False

    @property
    def value(self) -> str:
        return json.dumps(list(self.args)) if self.json_form else " ".join(self.args)

    @property
    def exec_form(self) -> list[str] | None:
        """The JSON array of an exec-form instruction (``["python3", "job.py"]``), else None."""
        return list(self.args) if self.json_form else None

    @property
    def words(self) -> list[str]:
        if self.json_form:
            return list(self.args)
        if self.keyword in ("RUN", "CMD", "ENTRYPOINT"):
            return " ".join(self.args).split()
        return list(self.args)

    def key_values(self) -> list[tuple[str, str | None]]:
        """ENV/LABEL pairs (``K=V K2="v 2"`` or the legacy ``K V``); ``ARG K`` gives (K, None). Quotes removed."""
        if self.keyword in ("ENV", "LABEL"):
            return [(key, _unquote(value)) for key, value in zip(self.args[0::2], self.args[1::2])]
        pairs: list[tuple[str, str | None]] = []
        for token in self.args:
            key, equals, value = token.partition("=")
            pairs.append((key, _unquote(value) if equals else None))
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
    """Read and parse *path*; a missing, non-regular, oversized or unreadable file is a :class:`DockerfileError`."""
    file = Path(path)
    try:
        data = read_regular(file, MAX_DOCKERFILE)
    except FileNotFoundError:
        raise DockerfileError(
            "Dockerfile not found; pass -f PATH (dockerfile=…) or add a Dockerfile to the context", path=str(file)
        ) from None
    except IsADirectoryError:
        raise DockerfileError("is a directory, not a Dockerfile", path=str(file)) from None
    except OSError as exc:
        raise DockerfileError(f"cannot read the Dockerfile: {exc.strerror or exc}", path=str(file)) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise DockerfileError("the Dockerfile is not UTF-8 text", path=str(file)) from None
    return parse(text, path=str(file), build_args=build_args)


def parse(text: str, *, path: str = "Dockerfile", build_args: Mapping[str, str] | None = None) -> Dockerfile:
    """Parse Dockerfile *text*; raise :class:`DockerfileError` naming the line for a syntax error."""
    try:
        commands = buildkit.parse_string(text)
    except buildkit.GoParseError as exc:
        reason = str(exc)
        line = 0 if "no instructions" in reason else _error_line(text, reason)
        raise DockerfileError(reason, path=path, line=line) from None
    instructions = [_instruction(command, path) for command in commands]
    return _stages(instructions, path, text, dict(build_args or {}))


def _error_line(text: str, reason: str) -> int:
    """BuildKit's errors carry no line: the first line at which a prefix of the file fails the same way."""
    lines = text.split("\n")
    for end in range(1, min(len(lines), 4000) + 1):
        try:
            buildkit.parse_string("\n".join(lines[:end]))
        except buildkit.GoParseError as exc:
            if str(exc) == reason:
                return end
    return 0


def _instruction(command: Any, path: str) -> Instruction:
    keyword = command.cmd.upper()
    if keyword not in INSTRUCTIONS:
        raise DockerfileError(
            f"unknown instruction {command.cmd!r}; instructions are {', '.join(sorted(INSTRUCTIONS))}",
            path=path,
            line=command.start_line,
        )
    args = tuple(command.value)
    if keyword in _NEEDS_ARGUMENTS and not args:
        raise DockerfileError(f"{keyword} requires at least one argument", path=path, line=command.start_line)
    return Instruction(
        keyword=keyword,
        args=args,
        line=command.start_line,
        end_line=command.end_line,
        flags=_flags(command.flags, path, command.start_line),
        heredocs=tuple(doc.content for doc in command.heredocs),
        original=command.original,
        json_form=bool(command.json),
    )


def _flags(raw: tuple[str, ...], path: str, line: int) -> dict[str, str]:
    flags: dict[str, str] = {}
    for token in raw:
        match = _FLAG.match(token)
        if not match:
            raise DockerfileError(f"malformed flag {token!r}", path=path, line=line)
        name, value = match.group(1), match.group(2)
        if value is None and name not in _BOOLEAN_FLAGS:
            raise DockerfileError(f"flag --{name} needs a value: --{name}=VALUE", path=path, line=line)
        value = value or ""
        flags[name] = f"{flags[name]},{value}" if name in flags else value
    return flags


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def _stages(instructions: list[Instruction], path: str, text: str, build_args: dict[str, str]) -> Dockerfile:
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
        words = current.words
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
