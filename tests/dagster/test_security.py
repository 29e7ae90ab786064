"""Hardening settings as pure functions: tables of good and bad inputs (no Docker, no cluster)."""

from __future__ import annotations

import pytest

from dagster_integration import ImagegateDagsterError, docker_hardening, restricted_pod_spec
from dagster_integration._security import numeric_user


@pytest.mark.parametrize(
    "user, expected",
    [("10001:10001", (10001, 10001)), ("10001", (10001, None)), ("app", (None, None)), ("app:10", (None, 10)), (None, (None, None))],
)
def test_numeric_user(user, expected):
    assert numeric_user(user) == expected


def test_docker_hardening_defaults_and_keeps_user_kwargs():
    kwargs = docker_hardening({"mem_limit": "64m", "security_opt": ["label=disable"], "cap_drop": ["NET_RAW"]})
    assert kwargs["mem_limit"] == "64m"
    assert kwargs["security_opt"] == ["label=disable", "no-new-privileges:true"]
    assert kwargs["cap_drop"] == ["ALL", "NET_RAW"]


@pytest.mark.parametrize(
    "kwargs, setting",
    [
        ({"privileged": True}, "container_kwargs.privileged"),
        ({"cap_add": ["SYS_ADMIN"]}, "container_kwargs.cap_add"),
        ({"security_opt": ["no-new-privileges:false"]}, "container_kwargs.security_opt"),
    ],
)
def test_docker_hardening_refuses_weakening(kwargs, setting):
    with pytest.raises(ImagegateDagsterError) as info:
        docker_hardening(kwargs)
    assert info.value.setting == setting


def test_restricted_pod_spec_from_numeric_user():
    spec = restricted_pod_spec("10001:10002")
    assert spec["security_context"] == {
        "run_as_non_root": True,
        "run_as_user": 10001,
        "run_as_group": 10002,
        "seccomp_profile": {"type": "RuntimeDefault"},
    }
    assert spec["containers"] == [
        {"security_context": {"allow_privilege_escalation": False, "run_as_non_root": True, "capabilities": {"drop": ["ALL"]}}}
    ]


def test_restricted_pod_spec_keeps_compatible_user_values_and_init_containers():
    base = {
        "service_account_name": "etl",
        "security_context": {"fs_group": 2000, "run_as_non_root": True},
        "init_containers": [{"name": "init", "image": "x@sha256:" + "0" * 64}],
        "containers": [{"resources": {"limits": {"cpu": "1"}}}],
    }
    spec = restricted_pod_spec("10001", base)
    assert spec["service_account_name"] == "etl"
    assert spec["security_context"]["fs_group"] == 2000
    assert spec["containers"][0]["resources"] == {"limits": {"cpu": "1"}}
    assert spec["init_containers"][0]["security_context"]["capabilities"] == {"drop": ["ALL"]}
    assert base["security_context"] == {"fs_group": 2000, "run_as_non_root": True}  # input not mutated


@pytest.mark.parametrize(
    "user, base, setting",
    [
        ("0", {}, "user"),
        ("10001", {"security_context": {"run_as_user": 0}}, "spec.securityContext.run_as_user"),
        ("10001", {"containers": [{"security_context": {"allow_privilege_escalation": True}}]}, "spec.containers[0].securityContext.allow_privilege_escalation"),
        ("10001", {"containers": [{"security_context": {"privileged": True}}]}, "spec.containers[0].securityContext.privileged"),
        ("10001", {"containers": [{"security_context": {"capabilities": {"add": ["NET_ADMIN"]}}}]}, "spec.containers[0].securityContext.capabilities.add"),
    ],
)
def test_restricted_pod_spec_refuses_contradictions(user, base, setting):
    with pytest.raises(ImagegateDagsterError) as info:
        restricted_pod_spec(user, base)
    assert info.value.setting == setting
