"""A tiny HTTPS client for the API server (admin client certificate), and polling with early failure."""

from __future__ import annotations

import http.client
import json
import ssl
import time
from pathlib import Path
from typing import Any

from .host import K8sError, tail
from .procs import proc_matches


class Api:
    """A tiny HTTPS client for the API server (admin client certificate), enough for `up`/`down`."""

    def __init__(self, port: int, pki: Path):
        self.port = port
        self.ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        self.ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))

    def request(self, method: str, path: str, body: Any = None, timeout: float = 10.0,
                content_type: str = "application/json") -> tuple[int, Any]:
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ctx, timeout=timeout)
        try:
            data = None if body is None else json.dumps(body).encode()
            headers = {"Content-Type": content_type, "Accept": "application/json"} if data else {}
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        finally:
            conn.close()
        try:
            return resp.status, json.loads(raw) if raw else None
        except ValueError:
            return resp.status, raw.decode("utf-8", "replace")

    def ok(self, path: str) -> Any | None:
        try:
            status, body = self.request("GET", path, timeout=5)
        except (OSError, http.client.HTTPException):
            return None
        return body if status == 200 else None


# kind -> (API path prefix, plural, namespaced): what `up` applies (see apply_objects).
KINDS = {
    "Namespace": ("/api/v1", "namespaces", False),
    "Service": ("/api/v1", "services", True),
    "Endpoints": ("/api/v1", "endpoints", True),
    "ServiceAccount": ("/api/v1", "serviceaccounts", True),
    "EndpointSlice": ("/apis/discovery.k8s.io/v1", "endpointslices", True),
    "ClusterRole": ("/apis/rbac.authorization.k8s.io/v1", "clusterroles", False),
    "ClusterRoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "clusterrolebindings", False),
    "Role": ("/apis/rbac.authorization.k8s.io/v1", "roles", True),
    "RoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "rolebindings", True),
}
FIELD_MANAGER = "imagegate-k8s"


def object_path(obj: dict) -> str:
    """The API path of one object of a kind in KINDS."""
    prefix, plural, namespaced = KINDS[obj["kind"]]
    md = obj["metadata"]
    ns = f"/namespaces/{md['namespace']}" if namespaced else ""
    return f"{prefix}{ns}/{plural}/{md['name']}"


def apply_objects(api: Api, objects: list[dict]) -> None:
    """Server-side apply each object (JSON is YAML, so the body needs no YAML library), forcing our field manager."""
    for obj in objects:
        path = object_path(obj) + f"?fieldManager={FIELD_MANAGER}&force=true"
        status, body = api.request("PATCH", path, obj, content_type="application/apply-patch+yaml")
        if status not in (200, 201):
            raise K8sError(f"cannot apply {obj['kind']} {obj['metadata'].get('namespace', '')}/"
                           f"{obj['metadata']['name']}: HTTP {status}: {body}")


def node_is_ready(node: dict | None) -> bool:
    """True when a Node object has the condition Ready=True."""
    conds = ((node or {}).get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)


def wait(what: str, check: Any, timeout: float, procs: dict[str, dict] | None = None, interval: float = 0.5) -> Any:
    """Poll *check* until it returns a truthy value; fail early when a started process died."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        for name, rec in (procs or {}).items():
            if rec and not proc_matches(rec):
                raise K8sError(f"{name} exited while waiting for {what}; last lines of {rec['log']}:\n"
                               f"{tail(rec['log'], 30)}")
        if time.monotonic() > deadline:
            logs = "\n".join(f"  {n}: {r['log']}" for n, r in (procs or {}).items() if r)
            raise K8sError(f"timed out after {timeout:.0f} s waiting for {what}; logs:\n{logs}")
        time.sleep(interval)
