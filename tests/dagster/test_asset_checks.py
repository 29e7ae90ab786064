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


def _report(check: str, outcome, waiver=None):
    import imagegate

    pinned = "registry.example.com/team/etl@sha256:" + "ab" * 32
    result = imagegate.CheckResult(check, outcome, "enforce", f"{check}: {outcome.value}", "the fix", waiver=waiver)
    return imagegate.Report(reference=pinned, pinned=pinned, backend="docker", platform="linux/amd64",
                            results=(result,))


@pytest.mark.parametrize("name, check", [("image_pinned", "pinned"), ("image_non_root", "non-root")])
@pytest.mark.parametrize("outcome, passed, severity", [
    ("pass", True, dg.AssetCheckSeverity.ERROR),  # severity is moot when passed
    ("fail", False, dg.AssetCheckSeverity.ERROR),
    ("warn", False, dg.AssetCheckSeverity.WARN),
    ("waived", False, dg.AssetCheckSeverity.WARN),  # a waiver let a root image launch: nothing vouches it is not root
    ("skipped", False, dg.AssetCheckSeverity.WARN),  # the policy turns it off: not checked is not passed
])
def test_only_a_check_that_ran_and_passed_is_passed(name, check, outcome, passed, severity):
    import imagegate
    from dagster_integration._asset_checks import evaluation

    outcome = imagegate.Outcome(outcome)
    waiver = "vendor image (until 2027-01-31)" if outcome is imagegate.Outcome.WAIVED else None
    result = evaluation(dg.AssetCheckKey(dg.AssetKey("etl"), name), _report(check, outcome, waiver), None)
    assert result.passed is passed and result.metadata["verified"].value is passed
    assert result.metadata["outcome"].value == outcome.value
    if not passed:
        assert result.severity == severity
    if waiver:
        assert result.metadata["waiver"].value == waiver
