"""The base images: a busybox-static rootfs and a Debian bookworm + python3 rootfs (``python_rootfs``),
imported with ``docker import`` and pushed to registry 1 (busybox also to the token registry as
``public/busybox`` and ``private/busybox``); the cache under ``~/.cache/imagegate/base``."""

from __future__ import annotations

import io
import json
import os
import re
import struct
import tarfile
import time
from pathlib import Path
from typing import Callable

from .engine import docker, docker_env
from .host import StackError, apt_install, run, say, sha256_file, which
from .python_rootfs import build_python_rootfs, python_cache_entry
from .registries import MANIFEST_ACCEPT, registry_digest
from .registry_token import PUSH_USER, load_accounts, token_registry_digest

STD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Fixed mtime for generated tar members, so the busybox layer digest is the same on every machine.
TAR_MTIME = 946684800  # 2000-01-01T00:00:00Z
BUSYBOX_DIRS = ("bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "root", "home", "home/app", "var", "dev", "proc",
                "sys")
BUSYBOX_FILES = {
    "etc/passwd": "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    "etc/group": "root:x:0:\napp:x:1000:\nnobody:x:65534:\n",
}


def cache_dir() -> Path:
    env = os.environ.get("IMAGEGATE_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "imagegate" / "base"


# ------------------------------------------------------------------------------------------- busybox


def is_static_elf(path: str) -> bool:
    """True for an ELF executable without a PT_INTERP program header (statically linked)."""
    try:
        with open(path, "rb") as f:
            ident = f.read(16)
            if ident[:4] != b"\x7fELF":
                return False
            is64, endian = ident[4] == 2, "<" if ident[5] == 1 else ">"
            if is64:
                f.seek(0x20)
                (phoff,) = struct.unpack(endian + "Q", f.read(8))
                f.seek(0x36)
            else:
                f.seek(0x1C)
                (phoff,) = struct.unpack(endian + "I", f.read(4))
                f.seek(0x2A)
            phentsize, phnum = struct.unpack(endian + "HH", f.read(4))
            for i in range(phnum):
                f.seek(phoff + i * phentsize)
                (ptype,) = struct.unpack(endian + "I", f.read(4))
                if ptype == 3:  # PT_INTERP
                    return False
            return True
    except (OSError, ValueError):
        return False


def find_static_busybox() -> str:
    candidates = [
        os.environ.get("IMAGEGATE_BUSYBOX_BIN", ""),
        which("busybox") or "",
        "/bin/busybox",
        "/usr/bin/busybox",
    ]
    for c in candidates:
        if c and os.path.isfile(c) and is_static_elf(c):
            return os.path.realpath(c)
    apt_install(["busybox-static"], "a statically linked busybox (for the busybox base image) is missing")
    for c in ("/bin/busybox", "/usr/bin/busybox"):
        if os.path.isfile(c) and is_static_elf(c):
            return os.path.realpath(c)
    raise StackError("no statically linked busybox found even after installing busybox-static")


def busybox_layout(applets: list[str]) -> tuple[set[str], list[str]]:
    """(directories, applet symlinks) of the rootfs for the applet paths of ``busybox --list-full``."""
    dirs = set(BUSYBOX_DIRS)
    links = []
    for path in applets:
        path = path.strip("/")
        if not path or path == "bin/busybox" or "/" not in path:  # skip the binary itself and `linuxrc`
            continue
        links.append(path)
        dirs.add(os.path.dirname(path))
    return dirs, links


def _tar_info(name: str, kind: bytes, mode: int, uid: int = 0) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type, ti.mode, ti.uid, ti.gid, ti.mtime = kind, mode, uid, uid, TAR_MTIME
    ti.uname = ti.gname = ""
    return ti


def write_busybox_tar(busybox_data: bytes, applets: list[str], out: Path) -> None:
    """The busybox rootfs as a reproducible tar (fixed mtime, owners by number, sorted members)."""
    dirs, links = busybox_layout(applets)
    tmp = out.with_name(out.name + f".{os.getpid()}.tmp")
    with tarfile.open(tmp, "w", format=tarfile.GNU_FORMAT) as tar:
        for d in sorted(dirs):
            mode = {"root": 0o700}.get(d, 0o755)
            tar.addfile(_tar_info(d, tarfile.DIRTYPE, mode, 1000 if d == "home/app" else 0))
        tar.addfile(_tar_info("tmp", tarfile.DIRTYPE, 0o1777))
        ti = _tar_info("bin/busybox", tarfile.REGTYPE, 0o755)
        ti.size = len(busybox_data)
        tar.addfile(ti, io.BytesIO(busybox_data))
        for path in sorted(links):
            ti = _tar_info(path, tarfile.SYMTYPE, 0o777)
            ti.linkname = "/bin/busybox"
            tar.addfile(ti)
        for name, text in BUSYBOX_FILES.items():
            raw = text.encode()
            ti = _tar_info(name, tarfile.REGTYPE, 0o644)
            ti.size = len(raw)
            tar.addfile(ti, io.BytesIO(raw))
    os.replace(tmp, out)


def _busybox_tar(busybox: str, out: Path) -> None:
    applets = run([busybox, "--list-full"], what="busybox --list-full").stdout.split()
    with open(busybox, "rb") as f:
        data = f.read()
    write_busybox_tar(data, applets, out)


def busybox_version(banner: str) -> str | None:
    m = re.search(r"BusyBox v(\d+(?:\.\d+)+)", banner)
    return m.group(1) if m else None


def ensure_busybox(host: str, reg: dict) -> dict:
    busybox = find_static_busybox()
    banner = run([busybox], check=False).stdout + run([busybox, "--help"], check=False).stdout
    version = busybox_version(banner)
    if not version:
        raise StackError(f"cannot read the busybox version from `{busybox}`")
    bin_digest = sha256_file(Path(busybox)).split(":")[1][:12]
    cdir = cache_dir()
    cdir.mkdir(parents=True, exist_ok=True)
    tar = cdir / f"busybox-{version}-{bin_digest}.tar"
    if not tar.exists():
        say(f"image: building busybox {version} rootfs from {busybox} -> {tar}")
        _busybox_tar(busybox, tar)
    tar_digest = sha256_file(tar)
    local_ref = f"imagegate/busybox:{version}"
    import_image(host, tar, local_ref, tar_digest, [f"ENV PATH={STD_PATH}", 'CMD ["/bin/sh"]'])
    digest = push(host, reg, local_ref, "base/busybox", [version])
    ref = f"{reg['addr']}/base/busybox:{version}"
    return {
        "version": version,
        "local": local_ref,
        "ref": ref,
        "digest": digest,
        "ref_by_digest": f"{reg['addr']}/base/busybox@{digest}",
        "tarball": str(tar),
        "layer": tar_digest,
    }


# -------------------------------------------------------------------------------------------- python


def ensure_python(host: str, reg: dict, state_dir: Path, rebuild: bool) -> dict:
    cdir = cache_dir()
    cdir.mkdir(parents=True, exist_ok=True)
    info = None if rebuild else python_cache_entry(cdir)
    if info:
        say(
            f"image: using cached python rootfs {info['tarball']} (python {info['python_version']}, "
            f"built {info['created']})"
        )
    else:
        info = build_python_rootfs(cdir, state_dir)
    pyver = info["python_version"]
    minor = ".".join(pyver.split(".")[:2])
    local_ref = f"imagegate/python:{pyver}-bookworm"
    import_image(
        host,
        Path(info["tarball"]),
        local_ref,
        info["layer"],
        [f"ENV PATH={STD_PATH}", "ENV LANG=C.UTF-8", 'CMD ["python3"]'],
    )
    tags = [f"{minor}-bookworm", f"{pyver}-bookworm"]
    digest = push(host, reg, local_ref, "base/python", tags)
    ref = f"{reg['addr']}/base/python:{tags[0]}"
    return {
        "version": pyver,
        "debian_version": info.get("debian_version"),
        "local": local_ref,
        "ref": ref,
        "tags": [f"{reg['addr']}/base/python:{t}" for t in tags],
        "digest": digest,
        "ref_by_digest": f"{reg['addr']}/base/python@{digest}",
        "tarball": info["tarball"],
        "layer": info["layer"],
    }


# ----------------------------------------------------------------------------------- docker: import, push


def local_image_layers(host: str, ref: str) -> list[str] | None:
    proc = docker(host, "image", "inspect", "--format", "{{json .RootFS.Layers}}", ref, check=False, timeout=60)
    if proc.returncode != 0:
        return None
    try:
        return json.loads(proc.stdout)
    except ValueError:
        return None


def import_image(host: str, tar: Path, local_ref: str, tar_digest: str, changes: list[str]) -> None:
    layers = local_image_layers(host, local_ref)
    if layers == [tar_digest]:
        say(f"image: {local_ref} is already in Docker (layer {tar_digest[:19]}…)")
        return
    say(f"image: importing {tar.name} as {local_ref}")
    args = ["import"]
    for c in changes:
        args += ["-c", c]
    docker(host, *args, str(tar), local_ref, timeout=900, what=f"docker import {local_ref}")


def pushed_digest(push_output: str) -> str | None:
    """The manifest digest in the output of ``docker push``."""
    m = re.search(r"digest: (sha256:[0-9a-f]{64})", push_output)
    return m.group(1) if m else None


def push(
    host: str,
    reg: dict,
    local_ref: str,
    repo: str,
    tags: list[str],
    *,
    config_dir: Path | None = None,
    digest_of: Callable[[str, str], str | None] | None = None,
) -> str:
    """Tag and push ``local_ref`` as REGISTRY/repo:tag for every tag; return the manifest digest.

    ``config_dir``: the docker CLI's config directory (``docker --config``) holding the registry login;
    ``digest_of(repo, tag)``: how to ask the registry for a tag's digest (default an anonymous HEAD)."""
    digest_of = digest_of or (lambda r, t: registry_digest(reg, r, t))
    cli = ["--config", str(config_dir)] if config_dir else []
    digest = None
    for tag in tags:
        ref = f"{reg['addr']}/{repo}:{tag}"
        docker(host, "tag", local_ref, ref, timeout=60)
        have = digest_of(repo, tag)
        repo_digests = docker(
            host, "image", "inspect", "--format", "{{json .RepoDigests}}", local_ref, timeout=60
        ).stdout
        if have and f"{reg['addr']}/{repo}@{have}" in repo_digests:
            say(f"image: {ref} already in the registry ({have[:19]}…)")
            digest = have
            continue
        say(f"image: pushing {ref} …")
        t0 = time.monotonic()
        out = docker(host, *cli, "push", ref, timeout=1800, what=f"docker push {ref}").stdout
        digest = pushed_digest(out) or digest_of(repo, tag)
        say(f"image: pushed {ref} in {time.monotonic() - t0:.1f} s ({digest})")
    if not digest:
        raise StackError(f"pushed {repo} but the registry at {reg['url']} reports no manifest for it")
    return digest


# ------------------------------------------------------------------------------------- token registry


def ensure_token_images(host: str, treg: dict, busybox: dict, state_dir: Path) -> dict:
    """The busybox base in the token registry as ``public/busybox`` (anonymous pull) and ``private/busybox``
    (credentials needed), pushed by the Docker Engine as the push account: ``docker login`` into a config
    directory of the stack's own (the user's ``~/.docker`` is left alone), so the engine does the token dance."""
    accounts = load_accounts(treg)
    config_dir = state_dir / "token-registry" / "docker-config"
    config_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(config_dir, 0o700)

    def digest_of(repo: str, tag: str) -> str | None:
        return token_registry_digest(treg, repo, tag, MANIFEST_ACCEPT)

    version, local_ref = busybox["version"], busybox["local"]
    run(
        ["docker", "--config", str(config_dir), "login", "--username", PUSH_USER, "--password-stdin", treg["addr"]],
        env=docker_env(host), timeout=60, what=f"docker login {treg['addr']}", input=accounts[PUSH_USER]["password"],
    )
    out = {}
    for name, repo in {"public": "public/busybox", "private": "private/busybox"}.items():
        digest = push(host, treg, local_ref, repo, [version], config_dir=config_dir, digest_of=digest_of)
        ref = f"{treg['addr']}/{repo}:{version}"
        out[name] = {"ref": ref, "digest": digest, "ref_by_digest": f"{treg['addr']}/{repo}@{digest}", "local": local_ref}
    return out
