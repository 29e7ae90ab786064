"""``image_signed`` / ``image_vulnerabilities``: never "passed" unless something was verified (no stack needed).

The reports here are the core's own values (``imagegate.Report`` / ``CheckResult``) as the gate returns them; the
policies are real ``imagegate.Policy`` objects with a real public key.
"""

from pathlib import Path

import dagster as dg
import imagegate
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from dagster_integration import ImagegateDagsterError, ImagegateResource, image_check_specs
from dagster_integration._asset_checks import IMAGE_SIGNED, evaluation, evidence_not_runnable
from tests.dagster.conftest import load_component_defs

REGISTRY = "registry.example.com"
DIGEST = "sha256:" + "ab" * 32
KEY = dg.AssetCheckKey(dg.AssetKey("etl"), IMAGE_SIGNED)


@pytest.fixture(scope="module")
def pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def _policy(pem: str, images: list[str], **checks: str) -> imagegate.Policy:
    data: dict = {"signatures": [{"images": images, "keys": [pem]}]}
    if checks:
        data["checks"] = checks
    return imagegate.Policy.from_mapping(data, source="test.toml")


def _report(outcome: imagegate.Outcome, message: str, *, repo: str = "team/etl", waiver: str | None = None,
            details: dict | None = None) -> imagegate.Report:
    results = [imagegate.CheckResult("pinned", imagegate.Outcome.PASS, "enforce", "pinned by digest")]
    fields = {"waiver": waiver}
    if details is not None:
        fields["details"] = details
    results.append(imagegate.CheckResult("signature", outcome, "enforce", message, "sign it", **fields))
    return imagegate.Report(reference=f"{REGISTRY}/{repo}@{DIGEST}", pinned=f"{REGISTRY}/{repo}@{DIGEST}",
                            backend="docker", platform="linux/amd64", results=tuple(results))


def test_a_verified_signature_passes(pem: str) -> None:
    policy = _policy(pem, [f"{REGISTRY}/team/**"])
    result = evaluation(KEY, _report(imagegate.Outcome.PASS, "signed by 1 of 1 key(s) (k.pub); 1 required"), None, policy)
    assert result.passed is True
    assert result.metadata["verified"].value is True and result.metadata["digest"].value == DIGEST


def test_an_unsigned_image_fails_with_error_severity(pem: str) -> None:
    policy = _policy(pem, [f"{REGISTRY}/team/**"])
    result = evaluation(KEY, _report(imagegate.Outcome.FAIL, "no cosign signature found"), None, policy)
    assert result.passed is False and result.severity == dg.AssetCheckSeverity.ERROR
    assert result.metadata["outcome"].value == "fail" and result.metadata["fix"].value == "sign it"


@pytest.mark.parametrize("outcome", [imagegate.Outcome.WAIVED, imagegate.Outcome.SKIPPED, imagegate.Outcome.WARN])
def test_waived_skipped_or_warned_is_never_passed(pem: str, outcome: imagegate.Outcome) -> None:
    policy = _policy(pem, [f"{REGISTRY}/team/**"])
    report = _report(outcome, "no cosign signature found", waiver="vendor image (until 2027-01-31)"
                     if outcome is imagegate.Outcome.WAIVED else None)
    result = evaluation(KEY, report, None, policy)
    assert result.passed is False and result.severity == dg.AssetCheckSeverity.WARN
    assert result.metadata["verified"].value is False
    if outcome is imagegate.Outcome.WAIVED:
        assert result.metadata["waiver"].value.startswith("vendor image")


def test_a_pass_no_rule_covers_is_not_passed(pem: str) -> None:
    """The core passes an image no [[signatures]] rule covers; the asset check must not read that as verified."""
    policy = _policy(pem, [f"{REGISTRY}/other/**"])
    report = _report(imagegate.Outcome.PASS, f"no [[signatures]] rule covers {REGISTRY}/team/etl")
    assert evaluation(KEY, report, None, policy).passed is False
    assert evaluation(KEY, report, None, None).passed is False  # no policy to say what covers it: not verified


def test_no_signature_result_is_not_run() -> None:
    report = imagegate.Report(reference="r", pinned=None, backend="docker", platform="linux/amd64", results=())
    result = evaluation(KEY, report, None, imagegate.Policy())
    assert result.passed is False and result.metadata["outcome"].value == "not run"


@pytest.mark.parametrize(("images", "modes", "reference", "expected"), [
    ([f"{REGISTRY}/team/**"], {}, "team/etl", None),
    ([f"{REGISTRY}/team/**"], {}, None, None),  # not resolved yet: decided once it is
    ([f"{REGISTRY}/other/**"], {}, "team/etl", f"covers {REGISTRY}/team/etl"),
    ([f"{REGISTRY}/team/**"], {"signature": "off"}, "team/etl", 'checks.signature = "off"'),
    (None, {}, "team/etl", "has no [[signatures]] rule"),
])
def test_when_image_signed_cannot_run(pem: str, images, modes, reference, expected) -> None:
    policy = _policy(pem, images, **modes) if images else imagegate.Policy()
    ref = imagegate.parse_reference(f"{REGISTRY}/{reference}:1.0.0") if reference else None
    reason = evidence_not_runnable(dg.AssetKey("etl"), IMAGE_SIGNED, policy, ref)
    if expected is None:
        assert reason is None
    else:
        assert expected in reason and "never reported as passed" in reason


def test_the_resource_refuses_an_uncovered_image_before_resolving_it(pem: str, tmp_path: Path) -> None:
    """The registry here does not exist: a refusal that tried to resolve it would be a registry error instead."""
    (tmp_path / "imagegate.toml").write_text(f'[[signatures]]\nimages = ["{REGISTRY}/other/**"]\nkeys = ["""{pem}"""]\n')

    @dg.asset(check_specs=image_check_specs("etl", ["image_pinned", "image_signed"]))
    def etl(context: dg.AssetExecutionContext, imagegate_gate: ImagegateResource):  # noqa: ANN202 (dagster reads it)
        imagegate_gate.preflight(context, image=f"{REGISTRY.replace('example.com', 'invalid')}/team/etl:1.0.0")

    resource = ImagegateResource(policy_file=str(tmp_path / "imagegate.toml"))
    with pytest.raises(ImagegateDagsterError, match=r"image_signed: .* no \[\[signatures\]\] rule .* covers"):
        dg.materialize([etl], resources={"imagegate_gate": resource})


def test_the_component_refuses_image_signed_without_a_covering_rule(pem: str, tmp_path: Path) -> None:
    (tmp_path / "imagegate.toml").write_text(f'[[signatures]]\nimages = ["{REGISTRY}/team/**"]\nkeys = ["""{pem}"""]\n')
    base = f"asset_key: etl\nchecks: [image_pinned, image_signed]\npolicy_file: {tmp_path / 'imagegate.toml'}\n"
    defs = load_component_defs(tmp_path, base + f"image: {REGISTRY}/team/etl:1.0.0\n")
    assert dg.AssetCheckKey(dg.AssetKey("etl"), "image_signed") in defs.resolve_asset_graph().asset_check_keys
    with pytest.raises(Exception) as uncovered:
        load_component_defs(tmp_path, base + f"image: {REGISTRY}/other/etl:1.0.0\n")
    assert f"no [[signatures]] rule of the policy ({tmp_path / 'imagegate.toml'}) covers {REGISTRY}/other/etl" \
        in _chain(uncovered.value)
    with pytest.raises(Exception) as off:
        load_component_defs(tmp_path, base + f"image: {REGISTRY}/team/etl:1.0.0\ncheck_modes: {{signature: 'off'}}\n")
    assert "image_signed cannot run with check_modes {signature: off}" in _chain(off.value)


def _chain(error: BaseException | None) -> str:
    """Every message of an exception and its causes (Dagster wraps a component's error in its own)."""
    messages = []
    while error is not None:
        messages.append(str(error))
        error = error.__cause__ or error.__context__
    return "\n".join(messages)


def test_check_modes_cannot_turn_signatures_on_without_a_rule(tmp_path: Path) -> None:
    (tmp_path / "imagegate.toml").write_text("# no [[signatures]]\n")
    resource = ImagegateResource(policy_file=str(tmp_path / "imagegate.toml"), check_modes={"signature": "enforce"})
    with pytest.raises(ImagegateDagsterError, match=r"check_modes: .*no \[\[signatures\]\] rule"):
        resource.load_policy()
    off = ImagegateResource(policy_file=str(tmp_path / "imagegate.toml"), check_modes={"signature": "off"})
    assert off.load_policy().mode("signature").value == "off"
