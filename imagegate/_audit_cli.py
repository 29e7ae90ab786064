"""``imagegate audit``: the command line's door onto the image audit (imagegate/_audit.py).

Only the options live here, so building the command line's parser costs nothing more: the audit's
records, filters and HTTP client load when the command runs.

Exit status: **0** runs matched, **1** none did, **2** any error (an :class:`ImagegateError`).
"""

from __future__ import annotations

import argparse
import os
from typing import Any

VERDICTS = ("passed", "waived", "refused")  # imagegate._audit.VERDICTS (a unit test holds them equal)


def add_parser(commands: Any) -> None:
    """Register ``audit`` on the command line's subparsers."""
    sub = commands.add_parser(
        "audit", help="list the task runs that went through the gate (Airflow api-server); exit 1 when none matched",
        description="Which task runs launched an image, and why they were allowed: the imagegate records of the "
                    "Airflow deployment at --url, newest first, for the DAGs your user may read.",
    )
    sub.add_argument("--url", default=os.environ.get("IMAGEGATE_AIRFLOW_URL", "http://localhost:8080"),
                     help="the Airflow api-server (default $IMAGEGATE_AIRFLOW_URL, else http://localhost:8080)")
    sub.add_argument("--username", default=os.environ.get("IMAGEGATE_AIRFLOW_USERNAME"),
                     help="log in with POST /auth/token as this user (password: $IMAGEGATE_AIRFLOW_PASSWORD)")
    sub.add_argument("--token", default=None, help="a JWT instead of a user (default $IMAGEGATE_AIRFLOW_TOKEN)")
    sub.add_argument("--image", metavar="DIGEST|REF", help="a digest (sha256:…), an image id prefix, REPO[:TAG] or REPO@sha256:…")
    sub.add_argument("--dag", metavar="DAG_ID", help="only this DAG")
    sub.add_argument("--verdict", choices=VERDICTS, help="only runs with this verdict")
    sub.add_argument("--since", metavar="WHEN", help="recorded at or after: ISO date/time or an age (24h, 7d)")
    sub.add_argument("--until", metavar="WHEN", help="recorded before: ISO date/time or an age")
    sub.add_argument("--limit", type=_count, default=50, help="at most this many runs (default 50)")
    sub.add_argument("--api-v2", action="store_true",
                     help="read Airflow's public /api/v2 only (as when the api-server has no imagegate plugin)")
    sub.add_argument("--scan", type=_count, default=1000,
                     help="with --api-v2: read at most this many records, newest first (default 1000)")
    sub.add_argument("--insecure", action="store_true", help="allow credentials over plain http to a non-loopback host")
    sub.add_argument("--timeout", type=_seconds, default=30.0, metavar="SECONDS", help="per request (default 30)")
    sub.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= value <= 100_000:
        raise argparse.ArgumentTypeError(f"{text!r} must be between 1 and 100000")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"{text!r} must be between 0 and 3600 seconds")
    return value


def run(args: argparse.Namespace) -> int:
    """The command: the rows from the api-server (the plugin's endpoint, else ``/api/v2``), printed."""
    import json

    from imagegate._audit import AirflowAPI, AuditFilter, fetch_api_v2, fetch_plugin, render_rows
    from imagegate._errors import redact_url

    flt = AuditFilter.parse(dag_id=args.dag, since=args.since, until=args.until, verdict=args.verdict, image=args.image)
    token = args.token or os.environ.get("IMAGEGATE_AIRFLOW_TOKEN") or None
    api = AirflowAPI(args.url, token=token, username=args.username, password=os.environ.get("IMAGEGATE_AIRFLOW_PASSWORD"),
                     timeout=args.timeout, insecure=args.insecure)
    with api:
        fetched = None if args.api_v2 else fetch_plugin(api, flt, args.limit)
        source = "plugin"
        if fetched is None:
            source = "api-v2"
            fetched = fetch_api_v2(api, flt, args.limit, args.scan)
    rows, more = fetched
    if args.json:
        print(json.dumps({"airflow": redact_url(api.url), "source": source, "filter": flt.to_params(),
                          "runs": [r.to_dict() for r in rows], "more": more}, indent=2))
    else:
        print(render_rows(rows, truncated=more))
    return 0 if rows else 1
