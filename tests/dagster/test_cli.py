"""One materialization through the Dagster CLI, of the example Definitions module."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from tests.dagster.conftest import job_words

pytestmark = pytest.mark.integration

DAGSTER = Path(sys.executable).with_name("dagster")


IMAGE_CHECKS = ("image_pinned", "image_non_root")
BUILD_CHECKS = IMAGE_CHECKS + ("dockerfile_lint",)
EXAMPLES = {  # asset -> the checks it declares (dockerfile_lint only where the asset builds the image)
    "wordcount": IMAGE_CHECKS, "wordcount_component": IMAGE_CHECKS, "wordcount_built": BUILD_CHECKS,
    "wordcount_image": BUILD_CHECKS, "wordcount_from_build": IMAGE_CHECKS,
}


def test_dagster_asset_materialize_runs_the_example(dagster_home, stack, wordcount_image, tmp_path):
    env = {**os.environ, **stack.env, "DAGSTER_HOME": str(dagster_home), "IMAGEGATE_WORDCOUNT_IMAGE": wordcount_image}
    proc = subprocess.run(
        [str(DAGSTER), "asset", "materialize", "-m", "dagster_integration.examples.wordcount", "--select", ",".join(EXAMPLES)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f'"words": {job_words()}' in proc.stdout + proc.stderr  # the job's own output, forwarded to the step's logs

    with dg.DagsterInstance.get() as instance:
        metadata = {}
        for key, declared in EXAMPLES.items():
            event = instance.get_latest_materialization_event(dg.AssetKey(key))
            assert event is not None, key
            metadata[key] = event.asset_materialization.metadata  # type: ignore[union-attr]
            assert metadata[key]["imagegate/check/non-root"].value.startswith("pass: ")
            for check in BUILD_CHECKS:
                history = instance.event_log_storage.get_asset_check_execution_history(dg.AssetCheckKey(dg.AssetKey(key), check), limit=1)
                if check in declared:
                    assert history and history[0].status.value == "SUCCEEDED", (key, check)
                else:  # not declared where nothing is built: never recorded, so never "passed"
                    assert not history, (key, check)
        for key in ("wordcount", "wordcount_component"):
            assert metadata[key]["imagegate/pinned"].value.startswith(wordcount_image + "@sha256:")
        for key in ("wordcount_built", "wordcount_image"):
            assert metadata[key]["imagegate/build"].value["pinned"] == metadata[key]["imagegate/pinned"].value
        # the run asset launched exactly what the build asset produced
        assert metadata["wordcount_from_build"]["imagegate/pinned"].value == metadata["wordcount_image"]["imagegate/pinned"].value
        for key in ("wordcount", "wordcount_component", "wordcount_built", "wordcount_from_build"):
            assert f'"words": {job_words()}' in metadata[key]["imagegate/output"].value, key  # the same job ran
        assert "imagegate/launched" not in metadata["wordcount_image"]  # the build asset launches nothing


def test_example_module_without_the_image_says_what_to_set(dagster_home, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "IMAGEGATE_WORDCOUNT_IMAGE"} | {"DAGSTER_HOME": str(dagster_home)}
    proc = subprocess.run(
        [str(DAGSTER), "asset", "materialize", "-m", "dagster_integration.examples.wordcount", "--select", "wordcount"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=240,
    )
    assert proc.returncode != 0
    assert "IMAGEGATE_WORDCOUNT_IMAGE is not set" in proc.stdout + proc.stderr
