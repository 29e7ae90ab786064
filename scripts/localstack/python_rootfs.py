"""The python base image's rootfs: Debian bookworm + python3 by ``debootstrap`` (root), slimmed, packed and
cached as ``python-VERSION-bookworm-DATE.tar`` with a ``.json`` description beside it.

``python3-venv`` comes with it: ``python3 -m venv`` bootstraps pip from Debian's bundled wheels, offline,
which is how the example job's builder stage installs its hashed lock file."""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from .host import StackError, is_root, require_tool, run, say, sha256_file, tail, write_file

DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEBOOTSTRAP_PHASES = (
    "I: Retrieving InRelease",
    "I: Validating Packages",
    "I: Resolving dependencies",
    "I: Found additional",
    "I: Installing core packages",
    "I: Unpacking required",
    "I: Configuring required",
    "I: Unpacking the base",
    "I: Configuring the base",
    "I: Base system installed",
)
# Emptied in the rootfs (keeping the names in SLIM_KEEP): caches, docs, man pages, locales, temp dirs, /dev.
SLIM_DIRS = (
    "var/cache/apt",
    "var/lib/apt/lists",
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
    "usr/share/lintian",
    "usr/share/linda",
    "tmp",
    "var/tmp",
    "dev",
)
SLIM_KEEP = ("archives", "partial", "locale.alias")
# What debootstrap adds to minbase; a cached rootfs built with another list is not reused.
PACKAGES = ("python3", "python3-venv")


# ------------------------------------------------------------------------------------------- mirror


def deb822_bookworm_uris(text: str) -> list[str]:
    """URIs of the ``Types: deb`` stanzas for bookworm in a deb822 ``.sources`` file."""
    uris: list[str] = []
    for stanza in re.split(r"\n\s*\n", text):
        fields = dict(re.findall(r"^([A-Za-z-]+):\s*(.*)$", stanza, re.M))
        if "deb" in fields.get("Types", "").split() and re.search(r"\bbookworm\b", fields.get("Suites", "")):
            uris += fields.get("URIs", "").split()
    return uris


def list_bookworm_uris(text: str) -> list[str]:
    """URIs of the ``deb ... bookworm ...`` lines of a one-line-style ``.list`` file."""
    uris = []
    for line in text.splitlines():
        m = re.match(r"\s*deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+bookworm\s", line + " ")
        if m:
            uris.append(m.group(1))
    return uris


def pick_mirror(uris: list[str]) -> str:
    for uri in uris:  # the main archive, not security/updates-only mirrors
        if "security" not in uri and uri.startswith(("http://", "https://")):
            return uri.rstrip("/")
    return DEFAULT_MIRROR


def debian_mirror() -> str:
    env = os.environ.get("IMAGEGATE_DEBIAN_MIRROR")
    if env:
        return env
    uris: list[str] = []
    for src in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        with contextlib.suppress(OSError):
            uris += deb822_bookworm_uris(src.read_text())
    lists = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*.list"))]
    for src in lists:
        with contextlib.suppress(OSError):
            uris += list_bookworm_uris(src.read_text())
    return pick_mirror(uris)


# -------------------------------------------------------------------------------------------- cache


def python_cache_entry(cdir: Path) -> dict | None:
    best = None
    for meta in sorted(cdir.glob("python-*-bookworm-*.json")):
        try:
            info = json.loads(meta.read_text())
        except (OSError, ValueError):
            continue
        tar = Path(info.get("tarball", ""))
        if info.get("packages") != list(PACKAGES):
            continue  # built with other packages (or before they were recorded): build anew
        if tar.is_file() and tar.stat().st_size == info.get("size"):
            if best is None or info.get("created", "") > best.get("created", ""):
                best = info
    return best


# -------------------------------------------------------------------------------------------- build


def build_python_rootfs(cdir: Path, state_dir: Path) -> dict:
    if not is_root():
        raise StackError(
            "building the python base image needs debootstrap, which needs root. Run `up` as root "
            "once (the result is cached), or pass --no-python-base."
        )
    debootstrap = require_tool("debootstrap", "debootstrap", "to build the python base image")
    mirror = debian_mirror()
    work = Path(tempfile.mkdtemp(prefix=".build-python-", dir=cdir))
    rootfs = work / "rootfs"
    log = state_dir / "debootstrap.log"
    cmd = [debootstrap, "--variant=minbase", f"--include={','.join(PACKAGES)}", "bookworm", str(rootfs), mirror]
    say(f"image: running {shlex.join(cmd)} (takes a few minutes; log {log})")
    t0 = time.monotonic()
    try:
        rc = _run_debootstrap(cmd, log, t0)
        if rc != 0:
            raise StackError(
                f"debootstrap failed (exit {rc}) using mirror {mirror} (set IMAGEGATE_DEBIAN_MIRROR "
                f"to use another). Log {log}:\n{tail(log)}"
            )
        say(f"image: debootstrap finished in {time.monotonic() - t0:.0f} s")
        return _pack_rootfs(rootfs, work, cdir, mirror, t0)
    finally:
        umount_under(rootfs)
        shutil.rmtree(work, ignore_errors=True)


def _run_debootstrap(cmd: list[str], log: Path, t0: float) -> int:
    """Run debootstrap with its output in *log*, showing its phases (and a line at least every 20 s)."""
    with open(log, "w") as logf:
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            stdin=subprocess.DEVNULL,
            env=dict(os.environ, LC_ALL="C"),
        )
        shown = time.monotonic()
        assert proc.stdout is not None
        for line in proc.stdout:
            logf.write(line)
            logf.flush()
            line = line.rstrip()
            if line.startswith(DEBOOTSTRAP_PHASES) or time.monotonic() - shown > 20:
                say(f"debootstrap [{time.monotonic() - t0:4.0f} s] {line}")
                shown = time.monotonic()
        return proc.wait()


def _pack_rootfs(rootfs: Path, work: Path, cdir: Path, mirror: str, t0: float) -> dict:
    """Slim the fresh rootfs, tar it into the cache and describe it in a .json beside the tar."""
    pyver = run(
        ["chroot", str(rootfs), "python3", "-c", "import platform;print(platform.python_version())"],
        what="python3 inside the new rootfs",
    ).stdout.strip()
    debver = (rootfs / "etc/debian_version").read_text().strip()
    slim_rootfs(rootfs)
    created = _dt.datetime.now(_dt.UTC)
    stem = f"python-{pyver}-bookworm-{created:%Y%m%d}"
    tar = cdir / f"{stem}.tar"
    tmp_tar = work / "rootfs.tar"
    say(f"image: packing {tar}")
    run(
        ["tar", "--numeric-owner", "--sort=name", "-C", str(rootfs), "-cf", str(tmp_tar), "."],
        what="tar of the python rootfs",
        timeout=900,
    )
    os.replace(tmp_tar, tar)
    info = {
        "python_version": pyver,
        "debian_version": debver,
        "suite": "bookworm",
        "packages": list(PACKAGES),
        "mirror": mirror,
        "created": created.isoformat(timespec="seconds"),
        "tarball": str(tar),
        "size": tar.stat().st_size,
        "layer": sha256_file(tar),
        "build_seconds": round(time.monotonic() - t0),
    }
    write_file(cdir / f"{stem}.json", json.dumps(info, indent=2) + "\n")
    say(f"image: cached python rootfs {tar} ({info['size'] / 1e6:.0f} MB, python {pyver}, Debian {debver})")
    return info


def mounts_inside(proc_mounts: str, root: Path) -> list[str]:
    """Mount points at or below *root* in a /proc/mounts text, deepest first."""
    mounts = [line.split()[1] for line in proc_mounts.splitlines()]
    mounts = [m.replace("\\040", " ") for m in mounts]
    return sorted((m for m in mounts if m == str(root) or m.startswith(str(root) + "/")), key=len, reverse=True)


def umount_under(root: Path) -> None:
    try:
        text = Path("/proc/mounts").read_text()
    except OSError:
        return
    for m in mounts_inside(text, root):
        proc = run(["umount", "-l", m], check=False)
        if proc.returncode != 0:
            raise StackError(f"cannot unmount {m} inside the debootstrap tree; remove {root} by hand")


# --------------------------------------------------------------------------------------------- slim


def slim_rootfs(rootfs: Path) -> None:
    _clear_caches(rootfs)
    os.chmod(rootfs / "tmp", 0o1777)
    os.chmod(rootfs / "var/tmp", 0o1777)
    _add_app_user(rootfs)


def _clear(rootfs: Path, rel: str, keep: tuple[str, ...] = ()) -> None:
    d = rootfs / rel
    if not d.is_dir():
        return
    for child in d.iterdir():
        if child.name in keep:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                child.unlink()


def _clear_caches(rootfs: Path) -> None:
    for rel in SLIM_DIRS:
        _clear(rootfs, rel, keep=SLIM_KEEP)
    _clear(rootfs, "var/cache/apt/archives", keep=("partial",))
    for p in (rootfs / "var/log").rglob("*"):
        if p.is_file():
            with contextlib.suppress(OSError):
                p.unlink()
    for p in (rootfs / "var/cache/debconf").glob("*-old"):
        p.unlink()


def _add_app_user(rootfs: Path) -> None:
    """Unprivileged user `app` (uid/gid 1000), like the busybox image."""
    passwd = (rootfs / "etc/passwd").read_text()
    if not re.search(r"^[^:]*:[^:]*:1000:", passwd, re.M):
        with open(rootfs / "etc/passwd", "a") as f:
            f.write("app:x:1000:1000:app:/home/app:/bin/sh\n")
        with open(rootfs / "etc/group", "a") as f:
            f.write("app:x:1000:\n")
        for name, line in (("etc/shadow", "app:*:19000:0:99999:7:::\n"), ("etc/gshadow", "app:!::\n")):
            if (rootfs / name).exists():
                with open(rootfs / name, "a") as f:
                    f.write(line)
    home = rootfs / "home/app"
    home.mkdir(parents=True, exist_ok=True)
    os.chown(home, 1000, 1000)
