"""The asset-check translation: ``dockerfile_lint`` is never "passed" without a lint report (no stack needed)."""

import dagster as dg
import pytest

from dagster_integration._asset_checks import DOCKERFILE_LINT, image_check_specs, lint_evaluation, lint_not_runnable

KEY = dg.AssetCheckKey(dg.AssetKey("etl"), DOCKERFILE_LINT)


def test_no_lint_report_is_never_passed():
    evaluation = lint_evaluation(KEY, None, None)
    assert evaluation.passed is False and evaluation.metadata["outcome"].value == "not run"


@pytest.mark.parametrize(
    "lint, passed, refused, outcome",
    [
        ({"passed": True, "findings": []}, True, False, "pass"),
        ({"passed": False, "findings": [{"rule": "IG009"}]}, False, False, "warn"),
        ({"passed": False, "findings": [{"rule": "IG009"}]}, False, True, "fail"),
    ],
)
def test_a_lint_report_decides_the_check(lint, passed, refused, outcome):
    evaluation = lint_evaluation(KEY, None, lint, refused=refused)
    assert evaluation.passed is passed and evaluation.metadata["outcome"].value == outcome


@pytest.mark.parametrize(
    "source, mode, expected",
    [
        (None, "enforce", None),  # a job directory with the lint on: it runs
        (None, "warn", None),
        (None, "off", 'checks.lint = "off"'),
        ("image='r.example.com/etl:1'", "enforce", "given by image='r.example.com/etl:1'"),
        ("lock_name='etl'", "enforce", "given by lock_name='etl'"),
    ],
)
def test_when_the_lint_cannot_run(source, mode, expected):
    reason = lint_not_runnable(dg.AssetKey("etl"), source=source, lint_mode=mode)
    if expected is None:
        assert reason is None
    else:
        assert expected in reason and "never reported as passed" in reason


def test_unknown_check_names_are_refused():
    with pytest.raises(ValueError, match="unknown imagegate check 'image_scanned'"):
        image_check_specs("etl", ["image_scanned"])
