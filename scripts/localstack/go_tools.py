"""Small Go tools the benchmarks and tests compare against, built once from the Go module proxy and cached.

``crane`` (go-containerregistry) is the CLI peer of ``imagegate resolve``. Each tool is built with
``go install MODULE/cmd/TOOL@VERSION`` into ``~/.cache/imagegate/tools/TOOL/VERSION/`` (``$IMAGEGATE_CACHE_DIR``
overrides ``~/.cache/imagegate``), with its own Go module and build caches beside it, the same way
:mod:`localstack.k8s_binaries` builds Kubernetes (same ``go_env`` settings: ``GOTOOLCHAIN=local``,
``CGO_ENABLED=0``, ``GOWORK=off``, the proxy from ``$GOPROXY``). A second call is a cache hit.

    python3 scripts/stack.py tools crane      # build (once) and print the binary's path
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from . import k8s_binaries
from .host import StackError, elapsed, run, say, which, write_file


DEFAULT_LDFLAGS = "-s -w"


@dataclass(frozen=True)
class GoTool:
    name: str
    package: str  # the main package, as `go install` takes it
    version: str  # a version the Go module proxy serves
    ldflags: str = DEFAULT_LDFLAGS  # e.g. Trivy's version variable (-X ...)
    env: tuple[tuple[str, str], ...] = ()  # extra build environment, e.g. (("GOEXPERIMENT", "jsonv2"),)

    @property
    def spec(self) -> str:
        return f"{self.package}@{self.version}"

    def stamp(self) -> dict[str, object]:
        """What a cached build must match: the spec, plus the flags when they are not the defaults (so the stamps
        of tools built before flags existed stay valid)."""
        stamp: dict[str, object] = {"spec": self.spec}
        if self.ldflags != DEFAULT_LDFLAGS:
            stamp["ldflags"] = self.ldflags
        if self.env:
            stamp["env"] = dict(self.env)
        return stamp


TOOLS = {
    "crane": GoTool("crane", "github.com/google/go-containerregistry/cmd/crane", "v0.22.1"),
}


def tools_root() -> Path:
    return k8s_binaries.cache_root().parent / "tools"


def tool_dir(tool: GoTool) -> Path:
    return tools_root() / tool.name / tool.version


def go_env() -> dict[str, str]:
    """k8s_binaries' Go environment, with this directory's own module and build caches (no ``-mod=mod``:
    ``go install PKG@VERSION`` builds from the module's own go.mod and go.sum)."""
    env = k8s_binaries.go_env()
    root = tools_root()
    env.update(GOMODCACHE=str(root / "gomod"), GOCACHE=str(root / "gocache"))
    env.pop("GOFLAGS", None)
    return env


def go() -> str:
    found = which("go") or ("/usr/local/go/bin/go" if os.access("/usr/local/go/bin/go", os.X_OK) else None)
    if not found:
        raise StackError("the Go toolchain (go 1.22 or newer) is needed once to build the Go tools; install it "
                         "(e.g. to /usr/local/go) and re-run")
    return found


def tool_path(name: str) -> Path:
    tool = _tool(name)
    return tool_dir(tool) / "bin" / tool.name


def ensure_tool(name: str) -> Path:
    """The path of the built tool *name*, building it first when it is not cached."""
    tool = _tool(name)
    binary = tool_path(name)
    stamp = binary.parent / "build.json"
    if os.access(binary, os.X_OK) and stamp.is_file():
        try:
            recorded = json.loads(stamp.read_text())
            if {key: recorded.get(key) for key in tool.stamp()} == tool.stamp():
                return binary
        except (OSError, ValueError):
            pass
    gobin = go()
    vdir = tool_dir(tool)
    vdir.mkdir(parents=True, exist_ok=True)
    tmp = vdir / "bin.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    env = dict(go_env(), GOBIN=str(tmp), **dict(tool.env))
    log = vdir / "build.log"
    t0 = time.monotonic()
    say(f"building {tool.spec} from the Go module proxy (once; log {log})")
    k8s_binaries.run_logged([gobin, "install", "-trimpath", "-ldflags", tool.ldflags, tool.spec], vdir, env, log,
                            f"go install {tool.spec}")
    goversion = run([gobin, "version"], env=env, what="go version").stdout.strip()
    stamp_text = json.dumps({**tool.stamp(), "go": goversion, "seconds": round(time.monotonic() - t0, 1)}, indent=2)
    write_file(tmp / "build.json", stamp_text + "\n")
    shutil.rmtree(vdir / "bin", ignore_errors=True)
    os.replace(tmp, vdir / "bin")
    say(f"built {tool.name} {tool.version} in {elapsed(t0)} -> {binary}")
    return binary


def _tool(name: str) -> GoTool:
    tool = TOOLS.get(name)
    if tool is None:
        raise StackError(f"unknown Go tool {name!r}; known: {', '.join(sorted(TOOLS))}")
    return tool
