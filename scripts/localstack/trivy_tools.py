"""Trivy and a small local vulnerability database, so the tests' vulnerability reports come from the real scanner,
fully offline.

* Trivy v0.74.0 is built with ``go install github.com/aquasecurity/trivy/cmd/trivy@v0.74.0`` by
  :mod:`localstack.go_tools` (same Go environment and caches as crane and cosign) into
  ``~/.cache/imagegate/tools/trivy/v0.74.0/bin/trivy``. It needs ``GOEXPERIMENT=jsonv2`` (its release config sets
  it; without it ``encoding/json/jsontext`` has no Go files) and its version variable in ``-ldflags`` (else it
  reports "dev"). About 7-10 minutes on 2 cores, once.
* The database is written by ``scripts/localstack/trivydb`` (a small Go program on the trivy-db version Trivy
  v0.74.0 pins) from the fixture advisories ``tests/fixtures/trivy/advisories.json`` into
  ``~/.cache/imagegate/tools/trivy/db/KEY/db/{trivy.db,metadata.json}``, KEY a hash of the fixture file and the
  builder's sources: editing either builds a new one (well under a second, plus ~10 s to compile the builder
  once). That directory is what ``trivy --cache-dir`` takes (Trivy keeps its scan cache beside it, in ``fanal/``).

``$IMAGEGATE_CACHE_DIR`` overrides ``~/.cache/imagegate``. Never a release binary, never a downloaded database.

    PYTHONPATH=scripts python3 -m localstack.trivy_tools     # build both (once); print the binary and cache dir
    python3 scripts/stack.py tools trivy                      # only the binary

Scan offline with them (what tests/support/trivy.py runs)::

    trivy image --cache-dir CACHE_DIR --skip-db-update --skip-java-db-update --offline-scan --scanners vuln \\
        --skip-version-check --disable-telemetry --format json IMAGE
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

from . import go_tools, k8s_binaries
from .go_tools import GoTool
from .host import StackError, elapsed, run, say, set_voice, write_file

TRIVY_VERSION = "0.74.0"
TRIVY = GoTool(
    "trivy",
    "github.com/aquasecurity/trivy/cmd/trivy",
    f"v{TRIVY_VERSION}",
    ldflags=f"-s -w -X github.com/aquasecurity/trivy/pkg/version/app.ver={TRIVY_VERSION}",
    env=(("GOEXPERIMENT", "jsonv2"),),
)
go_tools.TOOLS.setdefault("trivy", TRIVY)

ROOT = Path(__file__).resolve().parents[2]
BUILDER_DIR = Path(__file__).resolve().parent / "trivydb"
BUILDER_SOURCES = ("go.mod", "go.sum", "main.go")
FIXTURES = ROOT / "tests" / "fixtures" / "trivy" / "advisories.json"


def trivy_path() -> Path:
    """Where the cached Trivy build is, built or not."""
    return go_tools.tool_path("trivy")


def ensure_trivy() -> Path:
    """The path of Trivy v0.74.0, building it from the Go module proxy when not cached."""
    return go_tools.ensure_tool("trivy")


def _digest(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for path in paths:
        data = path.read_bytes()
        h.update(f"{path.name}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()[:16]


def builder_key() -> str:
    return _digest([BUILDER_DIR / name for name in BUILDER_SOURCES])


def db_key(fixtures: Path = FIXTURES) -> str:
    """The hash naming a database: the fixture file and the builder's sources."""
    return _digest([fixtures, *(BUILDER_DIR / name for name in BUILDER_SOURCES)])


def db_cache_dir(fixtures: Path = FIXTURES) -> Path:
    """Trivy's ``--cache-dir`` for the database built from *fixtures* (its ``db/`` holds trivy.db), built or not."""
    return go_tools.tools_root() / "trivy" / "db" / db_key(fixtures)


def db_ready(cache_dir: Path) -> bool:
    db = cache_dir / "db"
    return (db / "trivy.db").is_file() and (db / "metadata.json").is_file() and (cache_dir / "build.json").is_file()


def ensure_builder() -> Path:
    """The fixture-database builder (scripts/localstack/trivydb), compiled once per version of its sources."""
    key = builder_key()
    binary = go_tools.tools_root() / "trivydb" / key / "trivydb"
    if os.access(binary, os.X_OK):
        return binary
    binary.parent.mkdir(parents=True, exist_ok=True)
    tmp = binary.with_name(f".trivydb.{os.getpid()}.tmp")
    log = binary.parent / "build.log"
    t0 = time.monotonic()
    say(f"compiling the fixture-database builder {BUILDER_DIR} (once; log {log})")
    # go.sum is kept in the repository: the default -mod=readonly builds exactly the pinned trivy-db.
    k8s_binaries.run_logged([go_tools.go(), "build", "-trimpath", "-o", str(tmp), "."], BUILDER_DIR,
                            go_tools.go_env(), log, "go build trivydb")
    os.replace(tmp, binary)
    say(f"compiled the database builder in {elapsed(t0)} -> {binary}")
    return binary


def ensure_db(fixtures: Path = FIXTURES) -> Path:
    """Trivy's ``--cache-dir`` holding the database built from *fixtures*, building it when not cached."""
    final = db_cache_dir(fixtures)
    if db_ready(final):
        return final
    builder = ensure_builder()
    t0 = time.monotonic()
    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        run([str(builder), "-fixtures", str(fixtures), "-cache-dir", str(tmp)], what="trivydb", timeout=120)
    except StackError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    stamp = {"fixtures": str(fixtures), "key": final.name, "seconds": round(time.monotonic() - t0, 2)}
    write_file(tmp / "build.json", json.dumps(stamp, indent=2) + "\n")
    try:
        os.rename(tmp, final)  # atomic; fails when a concurrent build got there first
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not db_ready(final):
            raise StackError(f"could not install the Trivy database at {final}; remove it and re-run") from None
    say(f"built the fixture vulnerability database in {elapsed(t0)} -> {final / 'db' / 'trivy.db'}")
    return final


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localstack.trivy_tools", description=__doc__.split("\n")[0])
    parser.add_argument("--fixtures", type=Path, default=FIXTURES, help="the fixture advisories (JSON)")
    args = parser.parse_args(argv)
    set_voice("trivy", detach_closed_stdout=False)
    try:
        binary = ensure_trivy()
        cache = ensure_db(args.fixtures.resolve())
    except StackError as exc:
        print(f"[trivy] {exc}", file=sys.stderr)
        return 1
    print(binary, flush=True)
    print(cache, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
