"""The sandbox (pause) image: Kubernetes' ``build/pause/linux/pause.c`` compiled statically with gcc, wrapped
in a one-layer OCI image archive (reproducible), because ``registry.k8s.io/pause`` cannot be pulled."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

from .host import run, say
from .k8s_binaries import K8S_VERSION, go, go_env, version_dir

PAUSE_VERSION = "3.9"  # the sandbox image version Kubernetes 1.28 expects
PAUSE_IMAGE = f"imagegate.local/pause:{PAUSE_VERSION}"
TAR_MTIME = 946684800  # 2000-01-01T00:00:00Z
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def tar_member(tf: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime, info.uid, info.gid = len(data), mode, TAR_MTIME, 0, 0
    tf.addfile(info, io.BytesIO(data))


def blob(tf: tarfile.TarFile, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    tar_member(tf, "blobs/sha256/" + digest.split(":", 1)[1], data)
    return digest


def canonical_json(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def layer_tar(binary: bytes) -> bytes:
    """The image's only layer: ``/pause``, mode 0755."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w", format=tarfile.GNU_FORMAT) as ltf:
        tar_member(ltf, "pause", binary, 0o755)
    return layer.getvalue()


def image_config(diff_id: str) -> dict:
    return {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": ["/pause"], "User": "65535:65535", "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": f"imagegate scripts/k8s.py: gcc -static kubernetes {K8S_VERSION} "
                                   "build/pause/linux/pause.c"}],
    }


def image_manifest(cfg_digest: str, cfg_size: int, layer_digest: str, layer_size: int) -> dict:
    return {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg_digest, "size": cfg_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest,
                    "size": layer_size}],
    }


def image_index(m_digest: str, m_size: int) -> dict:
    return {
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": OCI_MANIFEST,
            "digest": m_digest,
            "size": m_size,
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {"io.containerd.image.name": PAUSE_IMAGE,
                            "org.opencontainers.image.ref.name": PAUSE_VERSION},
        }],
    }


def write_oci_archive(archive: Path, binary: bytes) -> None:
    """The OCI image layout of a one-layer image holding *binary* as /pause, as a tar at *archive*."""
    layer_bytes = layer_tar(binary)
    diff_id = "sha256:" + hashlib.sha256(layer_bytes).hexdigest()
    tmp = archive.with_suffix(".tmp")
    with tarfile.open(tmp, "w", format=tarfile.GNU_FORMAT) as tf:
        cfg = canonical_json(image_config(diff_id))
        cfg_digest = blob(tf, cfg)
        layer_digest = blob(tf, layer_bytes)
        mbytes = canonical_json(image_manifest(cfg_digest, len(cfg), layer_digest, len(layer_bytes)))
        m_digest = blob(tf, mbytes)
        tar_member(tf, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        tar_member(tf, "index.json", json.dumps(image_index(m_digest, len(mbytes)), sort_keys=True).encode())
    os.replace(tmp, archive)


def _compile_pause(binary: Path) -> None:
    env = go_env()
    src = Path(env["GOMODCACHE"]) / f"k8s.io/kubernetes@{K8S_VERSION}" / "build/pause/linux/pause.c"
    if not src.is_file():
        run([go(), "mod", "download", f"k8s.io/kubernetes@{K8S_VERSION}"], env=env, timeout=1800,
            what="go mod download k8s.io/kubernetes")
    binary.parent.mkdir(parents=True, exist_ok=True)
    run(["gcc", "-Os", "-Wall", "-Werror", "-static", f"-DVERSION=v{PAUSE_VERSION}-imagegate", "-o", str(binary),
         str(src)], what="gcc -static pause.c", timeout=300)
    run(["strip", str(binary)], check=False, what="strip pause")


def ensure_pause_image() -> Path:
    """Compile pause.c statically and wrap it in a one-layer OCI image archive (cached, reproducible)."""
    out_dir = version_dir() / "pause"
    archive = out_dir / f"pause-{PAUSE_VERSION}-oci.tar"
    if archive.is_file():
        return archive
    binary = out_dir / "pause"
    _compile_pause(binary)
    write_oci_archive(archive, binary.read_bytes())
    say(f"pause image: built {archive} ({binary.stat().st_size} byte static binary)")
    return archive
