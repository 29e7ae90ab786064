"""The one-asset Dagster job of the kill campaign (tests/support/campaign.py).

(No ``from __future__ import annotations``: Dagster reads the asset's ``context`` annotation at definition time.)

Its settings come from the environment so that ``dg.reconstructable(job)`` rebuilds the same job in a
re-execution: ``IMAGEGATE_CAMPAIGN_IMAGE`` (a pinned reference), ``IMAGEGATE_CAMPAIGN_COMMAND`` (JSON list),
``IMAGEGATE_CAMPAIGN_OUT`` (where each run writes what its step saw), ``IMAGEGATE_CAMPAIGN_REATTACH`` (1/0);
``IMAGEGATE_CAMPAIGN_BACKEND=kubernetes`` runs the pod job instead (``IMAGEGATE_CAMPAIGN_KUBECONFIG``,
``…_CONTEXT``, ``…_NAMESPACE``).
"""

import json
import os
from pathlib import Path
from typing import Any

import dagster as dg

from dagster_integration import ImagegateDockerClient, ImagegateK8sClient, ImagegateResource


def _out() -> Path:
    return Path(os.environ.get("IMAGEGATE_CAMPAIGN_OUT", "/tmp"))


@dg.asset
def campaign_step(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    client = ImagegateDockerClient(ImagegateResource(), reattach=os.environ.get("IMAGEGATE_CAMPAIGN_REATTACH") == "1")
    seen: dict[str, Any] = {"run_id": context.run_id}
    try:
        invocation = client.run(context=context, image=os.environ["IMAGEGATE_CAMPAIGN_IMAGE"],
                                command=json.loads(os.environ["IMAGEGATE_CAMPAIGN_COMMAND"]))
        seen["output"] = invocation.output
        return invocation.get_materialize_result()
    finally:
        settled = client.settled
        if settled is not None:
            items = ([settled.reattached] if settled.reattached else []) + list(settled.removed) + list(settled.kept)
            seen["settled"] = [p.to_dict() for p in items]
        (_out() / f"{context.run_id}.json").write_text(json.dumps(seen))


@dg.asset
def campaign_pod(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    client = ImagegateK8sClient(ImagegateResource(), reattach=os.environ.get("IMAGEGATE_CAMPAIGN_REATTACH") == "1",
                                load_incluster_config=False, kubeconfig_file=os.environ["IMAGEGATE_CAMPAIGN_KUBECONFIG"],
                                kube_context=os.environ["IMAGEGATE_CAMPAIGN_CONTEXT"], poll_interval=0.5)
    seen: dict[str, Any] = {"run_id": context.run_id}
    try:
        invocation = client.run(context=context, image=os.environ["IMAGEGATE_CAMPAIGN_IMAGE"],
                                namespace=os.environ["IMAGEGATE_CAMPAIGN_NAMESPACE"],
                                command=json.loads(os.environ["IMAGEGATE_CAMPAIGN_COMMAND"]))
        return invocation.get_materialize_result()
    finally:
        seen["settled"] = [p.to_dict() for p in client.settled]
        (_out() / f"{context.run_id}.json").write_text(json.dumps(seen))


job = dg.define_asset_job("campaign_job", selection=[campaign_step], executor_def=dg.in_process_executor)
k8s_job = dg.define_asset_job("campaign_k8s_job", selection=[campaign_pod], executor_def=dg.in_process_executor)
defs = dg.Definitions(assets=[campaign_step, campaign_pod], jobs=[job, k8s_job])


def read_output(run_id: str) -> dict[str, Any]:
    path = _out() / f"{run_id}.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def campaign_job() -> Any:
    """The job, resolved (what ``dg.reconstructable`` rebuilds in a re-execution)."""
    kubernetes = os.environ.get("IMAGEGATE_CAMPAIGN_BACKEND") == "kubernetes"
    return defs.resolve_job_def("campaign_k8s_job" if kubernetes else "campaign_job")
