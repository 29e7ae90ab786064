"""cosign, the oracle for imagegate's signature verification, built once from the Go module proxy and cached.

cosign v3.1.3 (its default writes Sigstore bundles as OCI referrers) and v2.6.5 (its default writes the legacy
``sha256-<hex>.sig`` tag) are built with ``go install MODULE/cmd/cosign@VERSION`` by :mod:`localstack.go_tools`
(same Go environment and caches as crane and the Kubernetes binaries) into
``~/.cache/imagegate/tools/cosign/VERSION/bin/cosign`` (``$IMAGEGATE_CACHE_DIR`` overrides ``~/.cache/imagegate``).
Never a release binary: what the tests compare against is built from source here. A second call is a cache hit.

    PYTHONPATH=scripts python3 -m localstack.cosign_tools            # build cosign v3 (once); print its path
    PYTHONPATH=scripts python3 -m localstack.cosign_tools cosign-v2  # the same for v2.6.5

The tests read ``IMAGEGATE_COSIGN`` when set (a cosign you built yourself), else call :func:`ensure_cosign`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import go_tools
from .go_tools import GoTool
from .host import StackError, set_voice

COSIGN = GoTool("cosign", "github.com/sigstore/cosign/v3/cmd/cosign", "v3.1.3")
COSIGN_V2 = GoTool("cosign", "github.com/sigstore/cosign/v2/cmd/cosign", "v2.6.5")

# Registered in go_tools' table under these names (both binaries are called "cosign"; go_tools keeps them apart by
# version directory), so ``go_tools.ensure_tool("cosign")`` and ``stack.py tools cosign`` (once stack_cli imports
# this module) build them like crane.
NAMES = {"cosign": COSIGN, "cosign-v2": COSIGN_V2}
for _name, _tool in NAMES.items():
    go_tools.TOOLS.setdefault(_name, _tool)


def cosign_path(name: str = "cosign") -> Path:
    """Where the cached build of *name* ("cosign" or "cosign-v2") is, built or not."""
    return go_tools.tool_path(name)


def ensure_cosign(name: str = "cosign") -> Path:
    """The path of cosign (v3; "cosign-v2" for v2.6.5), building it from the Go module proxy when not cached."""
    if name not in NAMES:
        raise StackError(f"unknown cosign build {name!r}; known: {', '.join(sorted(NAMES))}")
    return go_tools.ensure_tool(name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localstack.cosign_tools", description=__doc__.split("\n")[0])
    parser.add_argument("name", nargs="?", default="cosign", choices=sorted(NAMES), help="which build (default v3)")
    args = parser.parse_args(argv)
    set_voice("cosign", detach_closed_stdout=False)
    try:
        path = ensure_cosign(args.name)
    except StackError as exc:
        print(f"[cosign] {exc}", file=sys.stderr)
        return 1
    print(path, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
