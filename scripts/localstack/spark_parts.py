"""What Spark on the test cluster needs, built once and cached (groundwork: the cluster does not run Spark yet).

* ``kube-proxy`` v1.28.15: the same ``k8s.io/kubernetes`` wrapper module, Go caches and version ldflags as
  :mod:`localstack.k8s_binaries`, but a wrapper module of its own (``tools/kube-proxy/VERSION/src``), so the
  cached Kubernetes build (its ``build.json`` and five binaries) is untouched and still hits.
* ``coredns`` v1.15.0: ``go install github.com/coredns/coredns@v1.15.0`` by :mod:`localstack.go_tools`.
* ``spark-operator`` v2.5.2 (kubeflow): ``go mod download`` of the module (verified by the Go checksum database),
  copied somewhere writable and built inside it (``go build ./cmd/operator``) so its replace directives apply;
  its CRDs (``config/crd/bases/*.yaml``) are kept beside the binary in ``bin/crds/``.
* ``pyspark`` 4.3.0: the PyPI sdist (456 MB), downloaded once, its size and sha256 checked against PyPI's JSON
  API; ``deps/`` unpacked as a Spark home, plus the ``pyspark`` package and py4j under ``python/``.
* the Spark image ``imagegate/spark:4.3.0-bookworm`` in the local Docker Engine: Debian bookworm (debootstrap
  minbase) + ``openjdk-17-jre-headless`` + python3 + tini, that Spark home in ``/opt/spark``, user 185, the
  official image's entrypoint contract (``driver`` / ``executor``) and a word-count job in
  ``/opt/spark/work-dir`` (``scripts/localstack/spark/``).

Everything lives under ``~/.cache/imagegate/tools/NAME/VERSION/`` (``$IMAGEGATE_CACHE_DIR`` overrides
``~/.cache/imagegate``); a second call is a cache hit. Progress lines say ``[spark]``.

    PYTHONPATH=scripts python3 -m localstack.spark_parts all    # or kube-proxy | coredns | spark-operator | spark-image
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import stat
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from . import go_tools, images, k8s_binaries, python_rootfs
from .engine import docker
from .go_tools import GoTool
from .host import StackError, elapsed, is_root, require_tool, run, say, set_voice, sha256_file, write_file

COREDNS = GoTool("coredns", "github.com/coredns/coredns", "v1.15.0")
go_tools.TOOLS.setdefault("coredns", COREDNS)

KUBE_PROXY = "kube-proxy"
OPERATOR_MODULE = "github.com/kubeflow/spark-operator/v2"
OPERATOR_VERSION = "v2.5.2"
# The operator reports k8s.io/component-base's version variables (`spark-operator version`), as its Makefile sets.
OPERATOR_LDFLAGS = (f"-s -w -X k8s.io/component-base/version.gitVersion={OPERATOR_VERSION} "
                    "-X k8s.io/component-base/version.gitTreeState=clean")

PYSPARK_VERSION = "4.3.0"
PYPI_URL = "https://pypi.org/pypi"
PYPI_JSON_LIMIT = 64 << 20  # the project document of pyspark lists every release: a few MB; refuse more

SPARK_DIR = Path(__file__).resolve().parent / "spark"  # Dockerfile, entrypoint.sh, wordcount.py, words.txt
SPARK_SOURCES = ("Dockerfile", "entrypoint.sh", "wordcount.py", "words.txt")
SPARK_UID = 185  # the official image's user
SPARK_IMAGE = f"imagegate/spark:{PYSPARK_VERSION}-bookworm"
IMAGE_KEY_LABEL = "org.imagegate.spark.key"
# What debootstrap adds to minbase (tini runs driver and executor, as in the official image; libnss-wrapper gives
# an arbitrary uid a passwd entry; procps for Spark's scripts). A cached rootfs built with another list is not reused.
BASE_PACKAGES = ("python3", "openjdk-17-jre-headless", "tini", "procps", "libnss-wrapper")

PARTS = ("kube-proxy", "coredns", "spark-operator", "spark-image")


# ------------------------------------------------------------------------------------------- layout


def part_dir(name: str, version: str) -> Path:
    """``tools/NAME/VERSION`` under the cache: where a part, its stamp and its build log live."""
    return go_tools.tools_root() / name / version


def _stamp_matches(stamp: Path, expected: dict[str, object]) -> bool:
    try:
        recorded = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(recorded, dict) and all(recorded.get(k) == v for k, v in expected.items())


def _finish(tmp: Path, final: Path, stamp: dict[str, object]) -> None:
    """Write *stamp* into *tmp* and move it to *final*, replacing an older build."""
    write_file(tmp / "build.json", json.dumps(stamp, indent=2) + "\n")
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)


def _fresh_dir(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def _go_version(gobin: str, env: dict[str, str]) -> str:
    return run([gobin, "version"], env=env, what="go version").stdout.strip()


# ----------------------------------------------------------------------------------------- kube-proxy


def kube_proxy_stamp() -> dict[str, object]:
    return {"version": k8s_binaries.K8S_VERSION, "ldflags": k8s_binaries.ldflags()}


def kube_proxy_tools_go() -> str:
    return '//go:build tools\n\npackage k8sbuild\n\nimport _ "k8s.io/kubernetes/cmd/kube-proxy"\n'


def kube_proxy_path() -> Path:
    return part_dir(KUBE_PROXY, k8s_binaries.K8S_VERSION) / "bin" / KUBE_PROXY


def ensure_kube_proxy() -> Path:
    """kube-proxy from the same Kubernetes release, Go caches and ldflags as the cluster's binaries."""
    binary = kube_proxy_path()
    if os.access(binary, os.X_OK) and _stamp_matches(binary.parent / "build.json", kube_proxy_stamp()):
        return binary
    gobin, env = k8s_binaries.go(), k8s_binaries.go_env()
    vdir = binary.parents[1]
    src = vdir / "src"
    src.mkdir(parents=True, exist_ok=True)
    log = vdir / "build.log"
    t0 = time.monotonic()
    say(f"building kube-proxy {k8s_binaries.K8S_VERSION} with the Kubernetes build's Go caches (once; log {log})")
    info = json.loads(run([gobin, "mod", "download", "-json", f"k8s.io/kubernetes@{k8s_binaries.K8S_VERSION}"],
                          env=env, timeout=1800, what="go mod download k8s.io/kubernetes").stdout)
    staging = k8s_binaries.staging_modules(Path(info["GoMod"]).read_text())
    if not staging:
        raise StackError(f"found no staging replacements in {info['GoMod']}")
    write_file(src / "go.mod", k8s_binaries.wrapper_gomod(staging))
    write_file(src / "tools.go", kube_proxy_tools_go())
    k8s_sum = k8s_binaries.version_dir() / "src" / "go.sum"  # its hashes save `go mod tidy` a few lookups
    if k8s_sum.is_file() and not (src / "go.sum").exists():
        shutil.copyfile(k8s_sum, src / "go.sum")
    k8s_binaries.run_logged([gobin, "mod", "tidy"], src, env, log, "go mod tidy (kube-proxy)")
    tmp = _fresh_dir(vdir / "bin.tmp")
    cmd = [gobin, "build", "-trimpath", "-ldflags", k8s_binaries.ldflags(), "-o", str(tmp / KUBE_PROXY),
           "k8s.io/kubernetes/cmd/kube-proxy"]
    k8s_binaries.run_logged(cmd, src, env, log, "go build kube-proxy")
    _finish(tmp, vdir / "bin", {**kube_proxy_stamp(), "go": _go_version(gobin, env),
                                "seconds": round(time.monotonic() - t0, 1)})
    say(f"built kube-proxy in {elapsed(t0)} -> {binary}")
    return binary


# -------------------------------------------------------------------------------------------- CoreDNS


def ensure_coredns() -> Path:
    return go_tools.ensure_tool("coredns")


# ------------------------------------------------------------------------------------- spark-operator


def operator_spec() -> str:
    return f"{OPERATOR_MODULE}@{OPERATOR_VERSION}"


def operator_stamp() -> dict[str, object]:
    return {"spec": operator_spec(), "ldflags": OPERATOR_LDFLAGS}


def operator_path() -> Path:
    return part_dir("spark-operator", OPERATOR_VERSION) / "bin" / "spark-operator"


def operator_crds() -> list[Path]:
    """The CRDs kept beside the operator binary (built or not: empty when not)."""
    return sorted((operator_path().parent / "crds").glob("*.yaml"))


def module_download(info: dict) -> tuple[Path, str]:
    """(extracted directory, h1: hash) from ``go mod download -json`` output, refusing an error or a gap."""
    if info.get("Error"):
        raise StackError(f"go mod download {operator_spec()}: {info['Error']}")
    directory, sum_ = info.get("Dir"), info.get("Sum")
    if not directory or not Path(directory, "go.mod").is_file() or not str(sum_ or "").startswith("h1:"):
        raise StackError(f"go mod download {operator_spec()} gave no extracted module with a hash: {info}")
    return Path(directory), str(sum_)


def ensure_spark_operator() -> Path:
    """The kubeflow spark-operator controller, built inside a writable copy of its module; CRDs beside it."""
    binary = operator_path()
    if (os.access(binary, os.X_OK) and _stamp_matches(binary.parent / "build.json", operator_stamp())
            and operator_crds()):
        return binary
    gobin, env = go_tools.go(), go_tools.go_env()
    vdir = binary.parents[1]
    vdir.mkdir(parents=True, exist_ok=True)
    log = vdir / "build.log"
    t0 = time.monotonic()
    say(f"building {operator_spec()} from the Go module proxy (once; ~4 min on 2 cores, log {log})")
    # `go list -versions` is refused for this module, `go mod download MODULE@VERSION` is served; the Go checksum
    # database verifies the zip (GOSUMDB is left at its default).
    proc = run([gobin, "mod", "download", "-json", operator_spec()], env=env, timeout=1800, check=False,
               what=f"go mod download {operator_spec()}")
    try:
        info = json.loads(proc.stdout)
    except ValueError:
        raise StackError(f"go mod download {operator_spec()} failed:\n{proc.stderr.strip()[-2000:]}") from None
    module_dir, module_sum = module_download(info)
    src = vdir / "src"
    shutil.rmtree(src, ignore_errors=True)
    shutil.copytree(module_dir, src)  # the module cache is read-only; the build writes nothing, but go wants to
    for path in (src, *src.rglob("*")):
        if not path.is_symlink():
            path.chmod(path.stat().st_mode | 0o200)
    tmp = _fresh_dir(vdir / "bin.tmp")
    cmd = [gobin, "build", "-trimpath", "-ldflags", OPERATOR_LDFLAGS, "-o", str(tmp / "spark-operator"),
           "./cmd/operator"]
    k8s_binaries.run_logged(cmd, src, env, log, "go build ./cmd/operator")
    crds = sorted((src / "config" / "crd" / "bases").glob("*.yaml"))
    if not crds:
        raise StackError(f"{operator_spec()} has no CRDs in config/crd/bases/")
    (tmp / "crds").mkdir()
    for crd in crds:
        shutil.copyfile(crd, tmp / "crds" / crd.name)
    _finish(tmp, vdir / "bin", {**operator_stamp(), "module_sum": module_sum, "go": _go_version(gobin, env),
                                "crds": [c.name for c in crds], "seconds": round(time.monotonic() - t0, 1)})
    say(f"built spark-operator {OPERATOR_VERSION} in {elapsed(t0)} -> {binary} (+{len(crds)} CRDs)")
    return binary


# --------------------------------------------------------------------------------------- PyPI: pyspark


def pypi_file(document: dict, version: str, filename: str) -> dict:
    """The entry of *filename* in a PyPI JSON document (``/pypi/NAME/VERSION/json`` has ``urls``, the project
    document ``/pypi/NAME/json`` has ``releases[VERSION]``), checked to carry an https URL, a size and a sha256."""
    files = document.get("urls") if "urls" in document and document.get("info", {}).get("version") == version \
        else None
    if files is None:
        files = (document.get("releases") or {}).get(version)
    for entry in files or []:
        if isinstance(entry, dict) and entry.get("filename") == filename:
            sha = str((entry.get("digests") or {}).get("sha256", ""))
            size = entry.get("size")
            if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha) or not isinstance(size, int):
                raise StackError(f"PyPI lists {filename} without a sha256 digest and size: {entry}")
            return entry
    raise StackError(f"PyPI lists no {filename} for version {version}")


def _get_json(url: str) -> dict:
    try:
        with urllib.request.urlopen(url, timeout=60) as resp:  # stdlib: the scripts run without the venv
            body = resp.read(PYPI_JSON_LIMIT + 1)
    except urllib.error.URLError as exc:
        raise StackError(f"cannot read {url}: {exc}") from None
    if len(body) > PYPI_JSON_LIMIT:
        raise StackError(f"{url} answered more than {PYPI_JSON_LIMIT} bytes; refusing it")
    try:
        document = json.loads(body)
    except ValueError:
        raise StackError(f"{url} answered something that is not JSON") from None
    if not isinstance(document, dict):
        raise StackError(f"{url} answered JSON that is not an object")
    return document


def pypi_entry(project: str, version: str, filename: str) -> tuple[dict, str]:
    """(PyPI's entry for the file, its absolute https URL); the version document first, else the project's."""
    base = os.environ.get("IMAGEGATE_PYPI_URL", PYPI_URL).rstrip("/")
    if not base.startswith("https://"):  # the digest that vouches for 456 MB must not be open to tampering
        raise StackError(f"IMAGEGATE_PYPI_URL must be an https:// URL (PyPI's JSON API), not {base!r}")
    errors = []
    for url in (f"{base}/{project}/{version}/json", f"{base}/{project}/json"):
        try:
            entry = pypi_file(_get_json(url), version, filename)
        except StackError as exc:
            errors.append(str(exc))
            continue
        absolute = urllib.parse.urljoin(url, entry["url"])
        if not absolute.startswith("https://"):
            raise StackError(f"PyPI gave a non-https URL for {filename}: {absolute}")
        return entry, absolute
    raise StackError("; ".join(errors))


def download_verified(url: str, dest: Path, size: int, sha256: str) -> None:
    """Stream *url* to *dest*, at most *size* bytes, and keep it only when size and sha256 match."""
    part = dest.with_name(dest.name + ".part")
    digest = hashlib.sha256()
    got, t0, shown = 0, time.monotonic(), time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=120) as resp, open(part, "wb") as out:
            while chunk := resp.read(1 << 20):
                got += len(chunk)
                if got > size:
                    raise StackError(f"{url} sent more than the {size} bytes PyPI lists; refusing it")
                digest.update(chunk)
                out.write(chunk)
                if time.monotonic() - shown > 20:
                    say(f"pyspark: {got >> 20} of {size >> 20} MB ({elapsed(t0)})")
                    shown = time.monotonic()
    except urllib.error.URLError as exc:
        part.unlink(missing_ok=True)
        raise StackError(f"cannot download {url}: {exc}") from None
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    if got != size or digest.hexdigest() != sha256:
        part.unlink(missing_ok=True)
        raise StackError(f"{url}: got {got} bytes with sha256 {digest.hexdigest()}, PyPI lists {size} bytes with "
                         f"sha256 {sha256}; nothing was kept")
    os.replace(part, dest)


def ensure_pypi_file(project: str, version: str, filename: str) -> tuple[Path, dict]:
    """(*filename* of *project* *version*, its stamp), downloaded once into ``tools/PROJECT/VERSION/`` and checked
    against PyPI's size and sha256."""
    vdir = part_dir(project, version)
    path, stamp_path = vdir / filename, vdir / f"{filename}.json"
    try:
        stamp = json.loads(stamp_path.read_text())
        if path.is_file() and path.stat().st_size == stamp["size"]:
            return path, stamp
    except (OSError, ValueError, KeyError, TypeError):
        pass
    entry, url = pypi_entry(project, version, filename)
    vdir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    say(f"downloading {filename} from PyPI ({entry['size'] / 1e6:.0f} MB, once)")
    download_verified(url, path, entry["size"], entry["digests"]["sha256"])
    stamp = {"url": url, "size": entry["size"], "sha256": entry["digests"]["sha256"],
             "seconds": round(time.monotonic() - t0, 1)}
    write_file(stamp_path, json.dumps(stamp, indent=2) + "\n")
    say(f"downloaded {filename} in {elapsed(t0)}, sha256 {stamp['sha256'][:16]}… as PyPI lists")
    return path, stamp


def sdist_target(name: str, top: str) -> str | None:
    """Where a member of the pyspark sdist goes in the Spark home (``deps/X`` -> ``X``, ``lib/X`` ->
    ``python/lib/X``), or None for what the Spark home does not need. Refuses what could leave the Spark home."""
    parts = name.split("/")
    if parts[0] != top or any(p in ("", ".", "..") for p in parts[1:]) or name.startswith("/") or "\\" in name:
        raise StackError(f"unexpected path {name!r} in the pyspark sdist (everything must be under {top}/)")
    if len(parts) > 2 and parts[1] == "deps":
        return "/".join(parts[2:])
    if len(parts) > 2 and parts[1] == "lib":
        return "/".join(["python", "lib", *parts[2:]])
    return None


def unpack_spark_home(sdist: Path, dest: Path, top: str) -> int:
    """Unpack the Spark home from *sdist* into *dest* (created); only regular files and directories, modes 0755 or
    0644. Returns the number of files. Written by hand, not ``extractall``: members are renamed on the way."""
    files = 0
    with tarfile.open(sdist, mode="r|gz") as tar:  # stream: one pass over 456 MB
        for member in tar:
            target = sdist_target(member.name.rstrip("/"), top) if member.name.rstrip("/") != top else None
            if target is None:
                continue
            path = dest / target
            if member.isdir():
                path.mkdir(parents=True, exist_ok=True)
            elif member.isfile():
                path.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                assert source is not None
                with open(path, "wb") as out:
                    shutil.copyfileobj(source, out, 1 << 20)
                path.chmod(0o755 if member.mode & 0o111 else 0o644)
                files += 1
            else:
                raise StackError(f"the pyspark sdist holds {member.name!r}, neither a file nor a directory")
    return files


def check_spark_home(home: Path) -> None:
    """What the image needs from the Spark home: spark-submit, the Kubernetes jars, pyspark.zip and one py4j."""
    needed = [home / "bin" / "spark-submit", home / "bin" / "spark-class", home / "python" / "lib" / "pyspark.zip"]
    missing = [str(p.relative_to(home)) for p in needed if not p.is_file()]
    if not list((home / "jars").glob("spark-kubernetes_*.jar")):
        missing.append("jars/spark-kubernetes_*.jar")
    if len(list((home / "python" / "lib").glob("py4j-*-src.zip"))) != 1:
        missing.append("exactly one python/lib/py4j-*-src.zip")
    if missing:
        raise StackError(f"the Spark home {home} lacks {', '.join(missing)}; remove it and re-run")


def ensure_spark_home() -> tuple[Path, str]:
    """(the Spark home unpacked from the pyspark sdist, the sdist's sha256), unpacked once."""
    filename = f"pyspark-{PYSPARK_VERSION}.tar.gz"
    sdist, stamp = ensure_pypi_file("pyspark", PYSPARK_VERSION, filename)
    home = part_dir("pyspark", PYSPARK_VERSION) / "spark-home"
    if _stamp_matches(home / "build.json", {"sdist_sha256": stamp["sha256"]}):
        return home, stamp["sha256"]
    t0 = time.monotonic()
    tmp = _fresh_dir(home.with_name("spark-home.tmp"))
    say(f"unpacking the Spark home from {filename}")
    files = unpack_spark_home(sdist, tmp, f"pyspark-{PYSPARK_VERSION}")
    check_spark_home(tmp)
    _finish(tmp, home, {"sdist_sha256": stamp["sha256"], "files": files, "seconds": round(time.monotonic() - t0, 1)})
    say(f"unpacked {files} files in {elapsed(t0)} -> {home}")
    return home, stamp["sha256"]


# ------------------------------------------------------------------------------------------ the image


def base_key(packages: tuple[str, ...] = BASE_PACKAGES, suite: str = "bookworm") -> str:
    """Names the cached base rootfs: what debootstrap was asked for, and how the result was changed."""
    recipe = [suite, "minbase", list(packages), SPARK_UID, "no-setuid"]
    return hashlib.sha256(json.dumps(recipe).encode()).hexdigest()[:12]


def strip_setuid(rootfs: Path) -> list[str]:
    """Clear the setuid/setgid bits of every regular file (su, mount, passwd, ...: nothing in a Spark pod needs to
    gain privileges). Returns the paths changed, relative to *rootfs*."""
    changed = []
    for top, _dirs, files in os.walk(rootfs):  # never follows symlinks
        for name in files:
            path = Path(top, name)
            mode = path.lstat().st_mode
            if stat.S_ISREG(mode) and mode & 0o6000:
                path.chmod(stat.S_IMODE(mode) & ~0o6000)
                changed.append(str(path.relative_to(rootfs)))
    return sorted(changed)


def image_key(base_layer: str, sdist_sha256: str, sources: dict[str, bytes]) -> str:
    """Names a build of the image: the base rootfs, the pyspark sdist and the files of scripts/localstack/spark/."""
    h = hashlib.sha256(f"{base_layer}\0{sdist_sha256}\0".encode())
    for name in sorted(sources):
        h.update(f"{name}\0{len(sources[name])}\0".encode() + sources[name])
    return h.hexdigest()[:16]


def spark_sources() -> dict[str, bytes]:
    return {name: (SPARK_DIR / name).read_bytes() for name in SPARK_SOURCES}


def base_paths() -> tuple[Path, Path]:
    vdir = part_dir("spark-image", f"{PYSPARK_VERSION}-bookworm")
    return vdir / f"base-{base_key()}.tar", vdir / f"base-{base_key()}.json"


def add_spark_user(rootfs: Path, uid: int = SPARK_UID) -> None:
    """The official image's ``spark`` user and group (numeric *uid*, no home, no login shell)."""
    passwd = (rootfs / "etc/passwd").read_text()
    if f":{uid}:" in passwd:
        return
    with open(rootfs / "etc/passwd", "a") as f:
        f.write(f"spark:x:{uid}:{uid}:spark:/nonexistent:/usr/sbin/nologin\n")
    with open(rootfs / "etc/group", "a") as f:
        f.write(f"spark:x:{uid}:\n")
    for name, line in (("etc/shadow", "spark:*:19000:0:99999:7:::\n"), ("etc/gshadow", "spark:!::\n")):
        if (rootfs / name).exists():
            with open(rootfs / name, "a") as f:
                f.write(line)


def java_home_in(rootfs: Path) -> str:
    """JAVA_HOME inside *rootfs*, read from the ``java`` alternative debootstrap set up."""
    link = os.readlink(rootfs / "etc/alternatives/java")  # /usr/lib/jvm/java-17-openjdk-ARCH/bin/java
    if not link.startswith("/usr/lib/jvm/") or not link.endswith("/bin/java"):
        raise StackError(f"unexpected java alternative {link!r} in the Spark rootfs")
    return link[: -len("/bin/java")]


def ensure_base_rootfs() -> dict:
    """Debian bookworm (debootstrap minbase) + BASE_PACKAGES, slimmed like the python base, packed and cached."""
    tar, meta = base_paths()
    try:
        info = json.loads(meta.read_text())
        if tar.is_file() and tar.stat().st_size == info["size"]:
            return info
    except (OSError, ValueError, KeyError):
        pass
    if not is_root():
        raise StackError("building the Spark image's rootfs needs debootstrap, which needs root: run it as root once "
                         "(the result is cached)")
    debootstrap = require_tool("debootstrap", "debootstrap", "to build the Spark image")
    mirror = python_rootfs.debian_mirror()
    tar.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".build-spark-", dir=tar.parent))
    rootfs, log = work / "rootfs", tar.parent / "debootstrap.log"
    cmd = [debootstrap, "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", "bookworm", str(rootfs), mirror]
    t0 = time.monotonic()
    say(f"debootstrap bookworm + {', '.join(BASE_PACKAGES)} (once; a few minutes; log {log})")
    try:
        rc = python_rootfs._run_debootstrap(cmd, log, t0)  # the python base's runner: same phases, same log
        if rc != 0:
            raise StackError(f"debootstrap failed (exit {rc}) using mirror {mirror} (set IMAGEGATE_DEBIAN_MIRROR to "
                             f"use another); log {log}")
        python_rootfs.umount_under(rootfs)
        java_home = java_home_in(rootfs)
        python_rootfs.slim_rootfs(rootfs)
        add_spark_user(rootfs)
        say(f"cleared the setuid/setgid bits of {', '.join(strip_setuid(rootfs)) or 'nothing'}")
        tmp_tar = work / "rootfs.tar"
        run(["tar", "--numeric-owner", "--sort=name", "-C", str(rootfs), "-cf", str(tmp_tar), "."],
            what="tar of the Spark rootfs", timeout=900)
        os.replace(tmp_tar, tar)
    finally:
        python_rootfs.umount_under(rootfs)
        shutil.rmtree(work, ignore_errors=True)
    info = {"suite": "bookworm", "packages": list(BASE_PACKAGES), "mirror": mirror, "java_home": java_home,
            "tarball": str(tar), "size": tar.stat().st_size, "layer": sha256_file(tar),
            "build_seconds": round(time.monotonic() - t0)}
    write_file(meta, json.dumps(info, indent=2) + "\n")
    for old in tar.parent.glob("base-*.*"):  # rootfs of another recipe: never used again
        if old.name not in (tar.name, meta.name) and old.suffix in (".tar", ".json"):
            old.unlink()
    say(f"cached the Spark rootfs {tar} ({info['size'] / 1e6:.0f} MB) in {elapsed(t0)}")
    return info


def _docker_host() -> str:
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def image_label(host: str, ref: str) -> str | None:
    proc = docker(host, "image", "inspect", "--format", f'{{{{index .Config.Labels "{IMAGE_KEY_LABEL}"}}}}', ref,
                  check=False, timeout=60)
    return proc.stdout.strip() if proc.returncode == 0 else None


def _image_id(host: str, ref: str) -> str | None:
    proc = docker(host, "image", "inspect", "--format", "{{.Id}}", ref, check=False, timeout=60)
    return proc.stdout.strip() if proc.returncode == 0 else None


def ensure_spark_image(host: str | None = None) -> str:
    """``imagegate/spark:4.3.0-bookworm`` in the local Docker Engine (never pushed anywhere), built when the engine
    lacks this exact build (label ``org.imagegate.spark.key``). Returns the local reference."""
    host = host or _docker_host()
    home, sdist_sha = ensure_spark_home()
    base = ensure_base_rootfs()
    key = image_key(base["layer"], sdist_sha, spark_sources())
    previous = image_label(host, SPARK_IMAGE)
    if previous == key:
        return SPARK_IMAGE
    previous_id = _image_id(host, SPARK_IMAGE) if previous else None  # an older build of ours: removed below
    t0 = time.monotonic()
    base_ref = f"imagegate/spark-base:bookworm-{base_key()}"
    images.import_image(host, Path(base["tarball"]), base_ref, base["layer"], [f"ENV PATH={images.STD_PATH}"])
    context = Path(tempfile.mkdtemp(prefix=".context-", dir=home.parent))
    try:
        # Hard links: the 480 MB Spark home enters the build context without a copy (same file system).
        run(["cp", "-al", str(home), str(context / "spark")], what="cp -al of the Spark home")
        (context / "spark" / "build.json").unlink()
        (context / "work-dir").mkdir()
        for name in SPARK_SOURCES:
            target = context / ("work-dir" if name in ("wordcount.py", "words.txt") else "") / name
            shutil.copyfile(SPARK_DIR / name, target)
        (context / "entrypoint.sh").chmod(0o755)
        say(f"building {SPARK_IMAGE} (docker build; sends the 480 MB Spark home to the engine)")
        # The classic builder: this engine's CLI may lack buildx, and the Dockerfile needs nothing BuildKit adds.
        env = dict(os.environ, DOCKER_HOST=host, DOCKER_BUILDKIT="0")
        run(["docker", "build", "--build-arg", f"BASE={base_ref}", "--build-arg", f"JAVA_HOME={base['java_home']}",
             "--label", f"{IMAGE_KEY_LABEL}={key}", "-t", SPARK_IMAGE, str(context)],
            env=env, timeout=1800, what=f"docker build {SPARK_IMAGE}")
    finally:
        shutil.rmtree(context, ignore_errors=True)
    if previous_id and previous_id != _image_id(host, SPARK_IMAGE):
        docker(host, "image", "rm", previous_id, check=False, timeout=120)  # in use by a container: left alone
    size = docker(host, "image", "inspect", "--format", "{{.Size}}", SPARK_IMAGE, timeout=60).stdout.strip()
    say(f"built {SPARK_IMAGE} in {elapsed(t0)} ({int(size) / 1e6:.0f} MB, key {key})")
    return SPARK_IMAGE


# ---------------------------------------------------------------------------------------------- CLI


def ensure(part: str) -> list[str]:
    """Build (once) *part*, or every part for ``all``; the paths (or the image reference) to print."""
    if part == "all":
        return [line for name in PARTS for line in ensure(name)]
    if part == "kube-proxy":
        return [str(ensure_kube_proxy())]
    if part == "coredns":
        return [str(ensure_coredns())]
    if part == "spark-operator":
        return [str(ensure_spark_operator()), *(str(p) for p in operator_crds())]
    if part == "spark-image":
        return [ensure_spark_image()]
    raise StackError(f"unknown part {part!r}; known: {', '.join(PARTS)}, all")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localstack.spark_parts", description=__doc__.split("\n")[0])
    parser.add_argument("part", nargs="?", default="all", choices=[*PARTS, "all"], help="what to build (default all)")
    args = parser.parse_args(argv)
    set_voice("spark", detach_closed_stdout=False)
    try:
        lines = ensure(args.part)
    except StackError as exc:
        print(f"[spark] {exc}", file=sys.stderr)
        return 1
    for line in lines:
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
