"""The registry's request log: distribution's logrus text lines (``IMAGEGATE_REGISTRY_LOG``), parsed.

``IMAGEGATE_REGISTRY_LOG`` is distribution's stderr (logrus text, one ``msg="response completed"`` line per
request under /v2/ with ``http.request.method``, ``http.request.uri`` and ``http.response.status``);
``IMAGEGATE_REGISTRY_ACCESS_LOG`` is its stdout (Apache combined format, one line for every request).
:func:`registry_requests` parses the former.
"""

from __future__ import annotations

import json
import os
import re

_LOGRUS_FIELD = re.compile(r'([A-Za-z_][\w.\-]*)=("(?:[^"\\]|\\.)*"|\S*)')
_V2_PATH = re.compile(r"^/v2/(?:(.+?)/)?(manifests|blobs/uploads|blobs|tags)(?:/|$)")
_KINDS = {"manifests": "manifest", "blobs": "blob", "blobs/uploads": "upload", "tags": "tags"}


def logrus_fields(line: str) -> dict[str, str]:
    """The ``key=value`` / ``key="quoted value"`` fields of a logrus text line."""
    fields = {}
    for key, value in _LOGRUS_FIELD.findall(line):
        if value.startswith('"'):
            try:
                value = json.loads(value)
            except ValueError:
                value = value[1:-1]
        fields[key] = value
    return fields


def classify_path(path: str) -> tuple[str, str | None]:
    """(kind, repo) of a /v2/ request path (without the query)."""
    m = _V2_PATH.match(path)
    if path in ("/v2/", "/v2"):
        return "base", None
    if path.startswith("/v2/_catalog"):
        return "catalog", None
    if m:
        return _KINDS[m.group(2)], m.group(1)
    return "other", None


def parse_request_line(line: str) -> dict | None:
    """One request of a registry log line, or None for a line that is not a request's outcome."""
    if 'msg="response completed' in line:
        challenged = False
    elif 'msg="error authorizing context' in line:  # auth registry: 401 challenge, no "completed" line
        challenged = True
    else:
        return None
    fields = logrus_fields(line)
    uri = fields.get("http.request.uri", "")
    path = uri.split("?", 1)[0]
    kind, repo = classify_path(path)
    try:
        status = 401 if challenged else int(fields.get("http.response.status", "0"))
    except ValueError:
        status = 0
    return {
        "method": fields.get("http.request.method", ""),
        "uri": uri,
        "path": path,
        "status": status,
        "kind": kind,
        "repo": repo,
        "time": fields.get("time", ""),
    }


def registry_requests(log_path: str | os.PathLike, start: int = 0) -> list[dict]:
    """Parse a registry log (``IMAGEGATE_REGISTRY_LOG``) from byte offset ``start``.

    Distribution writes one ``msg="response completed"`` (or ``"response completed with error"``) line per
    request under /v2/; on the auth registry a request refused with 401 writes ``msg="error authorizing
    context: ..."`` instead (counted here with status 401), and an accepted one writes an extra
    ``msg="authorized request"`` line (skipped here).

    Returns one dict per request: ``method``, ``uri``, ``path`` (uri without the query), ``status`` (int),
    ``kind`` (``manifest``, ``blob``, ``upload``, ``tags``, ``catalog``, ``base`` or ``other``), ``repo`` and
    ``time``. Use ``os.path.getsize(log)`` before an action as ``start`` to count only the requests that action
    made.
    """
    out = []
    with open(log_path, "rb") as f:
        f.seek(start)
        for raw in f:
            request = parse_request_line(raw.decode("utf-8", "replace"))
            if request is not None:
                out.append(request)
    return out
