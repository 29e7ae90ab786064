"""One materialization through the Dagster CLI, of the example Definitions module."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

pytestmark = pytest.mark.integration

DAGSTER = Path(sys.executable).with_name("dagster")


def test_dagster_asset_materialize_runs_the_example(dagster_home, stack, wordcount_image, tmp_path):
    env = {**os.environ, **stack.env, "DAGSTER_HOME": str(dagster_home), "IMAGEGATE_WORDCOUNT_IMAGE": wordcount_image}
    proc = subprocess.run(
        [str(DAGSTER), "asset", "materialize", "-m", "dagster_integration.examples.wordcount", "--select", "wordcount,wordcount_component,wordcount_built"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert '"words": 71' in proc.stdout + proc.stderr  # the job's own output, forwarded to the step's logs

    with dg.DagsterInstance.get() as instance:
        for key in ("wordcount", "wordcount_component", "wordcount_built"):
            event = instance.get_latest_materialization_event(dg.AssetKey(key))
            assert event is not None, key
            metadata = event.asset_materialization.metadata  # type: ignore[union-attr]
            if key != "wordcount_built":
                assert metadata["imagegate/pinned"].value.startswith(wordcount_image + "@sha256:")
            else:
                assert metadata["imagegate/build"].value["pinned"] == metadata["imagegate/pinned"].value
            assert '"words": 71' in metadata["imagegate/output"].value, key  # the same job ran
            assert metadata["imagegate/check/non-root"].value.startswith("pass: ")
            for check in ("image_pinned", "image_non_root", "dockerfile_lint"):
                history = instance.event_log_storage.get_asset_check_execution_history(dg.AssetCheckKey(dg.AssetKey(key), check), limit=1)
                assert history and history[0].status.value == "SUCCEEDED", (key, check)


def test_example_module_without_the_image_says_what_to_set(dagster_home, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "IMAGEGATE_WORDCOUNT_IMAGE"} | {"DAGSTER_HOME": str(dagster_home)}
    proc = subprocess.run(
        [str(DAGSTER), "asset", "materialize", "-m", "dagster_integration.examples.wordcount", "--select", "wordcount"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=240,
    )
    assert proc.returncode != 0
    assert "IMAGEGATE_WORDCOUNT_IMAGE is not set" in proc.stdout + proc.stderr
