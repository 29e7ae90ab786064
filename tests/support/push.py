"""Push test artifacts from :mod:`tests.support.oci` to a real registry over HTTP (sync httpx).

Independent of ``imagegate`` (integration tests use this to seed the registry the code under test reads):

    digest = push_image("http://127.0.0.1:5000", "team/etl", make_image(user="1000"), tag="v1")

Blobs use the monolithic upload of the distribution spec: ``POST /v2/<name>/blobs/uploads/`` answers 202
with a ``Location`` (absolute or relative, usually already carrying a ``_state`` query), then
``PUT <location>&digest=<digest>`` with the bytes. Blobs the registry already has (``HEAD`` 200) are
skipped. Manifests are ``PUT /v2/<name>/manifests/<tag-or-digest>`` with their media type as
``Content-Type``. The registry's ``Docker-Content-Digest`` is checked against the local digest.

``auth`` is a ``(user, password)`` pair for HTTP Basic (distribution's htpasswd mode); ``verify`` is
``True``/``False`` or the path of a CA bundle (PEM) to trust.
"""

from __future__ import annotations

import ssl

import httpx

from tests.support.oci import Blob, Image, Index

Auth = tuple[str, str] | None
Verify = bool | str


class PushError(Exception):
    """A push step failed; carries the HTTP status and the registry's response body."""

    def __init__(self, message: str, status: int | None = None, body: str = "") -> None:
        super().__init__(f"{message} (HTTP {status}): {body[:500]}" if status else message)
        self.status, self.body = status, body


def open_client(base_url: str, *, auth: Auth = None, verify: Verify = True, timeout: float = 30.0) -> httpx.Client:
    """An ``httpx.Client`` for ``base_url`` (e.g. ``https://127.0.0.1:5443``) with Basic auth and TLS trust."""
    context: bool | ssl.SSLContext = ssl.create_default_context(cafile=verify) if isinstance(verify, str) else verify
    return httpx.Client(base_url=base_url.rstrip("/"), auth=auth, verify=context, timeout=timeout)


def _expect(response: httpx.Response, statuses: tuple[int, ...], what: str) -> httpx.Response:
    """Return ``response`` if its status is one of ``statuses``, else raise :class:`PushError`."""
    if response.status_code not in statuses:
        request = response.request
        raise PushError(f"{what}: {request.method} {request.url}", response.status_code, response.text)
    return response


def _check_digest(response: httpx.Response, expected: str, what: str) -> str:
    """Return the ``Docker-Content-Digest`` the registry reported, after checking it equals ``expected``."""
    reported = response.headers.get("Docker-Content-Digest")
    if reported != expected:
        raise PushError(f"{what}: registry reports digest {reported}, local digest is {expected}")
    return reported


def blob_exists(client: httpx.Client, repo: str, digest: str) -> bool:
    """Whether ``repo`` already holds the blob ``digest``."""
    response = client.head(f"/v2/{repo}/blobs/{digest}")
    return _expect(response, (200, 404), f"checking blob {digest}").status_code == 200


def upload_blob(client: httpx.Client, repo: str, blob: Blob) -> str:
    """Upload ``blob`` into ``repo`` unless it is already there; returns its digest."""
    if blob_exists(client, repo, blob.digest):
        return blob.digest
    started = _expect(client.post(f"/v2/{repo}/blobs/uploads/"), (202,), f"starting upload to {repo}")
    location = started.headers.get("Location")
    if not location:
        raise PushError(f"starting upload to {repo}: no Location header", started.status_code, started.text)
    url = started.url.join(location).copy_add_param("digest", blob.digest)
    headers = {"Content-Type": "application/octet-stream"}
    done = _expect(client.put(url, content=blob.data, headers=headers), (201,), f"uploading blob {blob.digest}")
    return _check_digest(done, blob.digest, f"uploading blob {blob.digest}")


def upload_manifest(client: httpx.Client, repo: str, manifest: Blob, reference: str | None = None) -> str:
    """Put ``manifest`` under ``reference`` (a tag; default its own digest); returns the registry's digest."""
    url = f"/v2/{repo}/manifests/{reference or manifest.digest}"
    response = client.put(url, content=manifest.data, headers={"Content-Type": manifest.media_type})
    _expect(response, (201,), f"putting manifest {manifest.digest} as {repo}:{reference or manifest.digest}")
    return _check_digest(response, manifest.digest, f"putting manifest {repo}:{reference}")


def upload_image(client: httpx.Client, repo: str, image: Image, tag: str | None = None) -> str:
    """Upload an image's blobs, then its manifest; returns the manifest digest."""
    for blob in image.all_blobs():
        upload_blob(client, repo, blob)
    return upload_manifest(client, repo, image.manifest, tag)


def upload_index(client: httpx.Client, repo: str, index: Index, tag: str | None = None) -> str:
    """Upload every image of ``index`` by digest, then the index; returns the index digest."""
    for _, image in index.images:
        upload_image(client, repo, image)
    return upload_manifest(client, repo, index.manifest, tag)


def push_blob(base_url: str, repo: str, blob: Blob, *, auth: Auth = None, verify: Verify = True) -> str:
    """Push one blob to the registry at ``base_url``; returns its digest."""
    with open_client(base_url, auth=auth, verify=verify) as client:
        return upload_blob(client, repo, blob)


def push_manifest(
    base_url: str, repo: str, manifest: Blob, reference: str | None = None, *, auth: Auth = None, verify: Verify = True
) -> str:
    """Push manifest bytes (its blobs must already be there); returns the digest the registry reports."""
    with open_client(base_url, auth=auth, verify=verify) as client:
        return upload_manifest(client, repo, manifest, reference)


def push_image(
    base_url: str, repo: str, image: Image, tag: str | None = None, *, auth: Auth = None, verify: Verify = True
) -> str:
    """Push an image (blobs, then manifest under ``tag`` or by digest); returns the manifest digest."""
    with open_client(base_url, auth=auth, verify=verify) as client:
        return upload_image(client, repo, image, tag)


def push_index(
    base_url: str, repo: str, index: Index, tag: str | None = None, *, auth: Auth = None, verify: Verify = True
) -> str:
    """Push a multi-platform index with all its images; returns the index digest."""
    with open_client(base_url, auth=auth, verify=verify) as client:
        return upload_index(client, repo, index, tag)
