"""Docker options that remove the confinement or reach the host by other roads than a bind of a host path:
a seccomp profile of the launch's own, SELinux labels, another container's namespaces, the host's cgroup
namespace, device cgroup rules, volume driver options and mount types; each in the request
(:func:`harden_docker`) and in the engine's record (:func:`docker_violations`, :func:`mount_violations`)."""

from __future__ import annotations

from typing import Any

import pytest
from docker.types import DriverConfig, HostConfig, Mount

from imagegate import HardeningError, Policy, docker_violations, harden_docker
from imagegate._hardening import mount_violations

ALLOW_ALL = '{"defaultAction":"SCMP_ACT_ALLOW"}'  # what `docker run --security-opt seccomp=file.json` sends
HARDENED = {"CapDrop": ["ALL"], "SecurityOpt": ["no-new-privileges:true"], "Privileged": False}
#: What Docker 20.10 records for an unprivileged container (daemon/pkg/oci/defaults.go).
ENGINE_MASKED = ["/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
                 "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware"]
ENGINE_READONLY = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]


def _volume(options: dict[str, str], **extra: Any) -> dict[str, Any]:
    return {"Type": "volume", "Source": "v1", "Target": "/h",
            "VolumeOptions": {"DriverConfig": {"Name": "local", "Options": options}}, **extra}


WEAKENING = [
    # (request kwargs, the same as the engine records it, what the refusal names)
    ({"security_opt": [f"seccomp={ALLOW_ALL}"]}, {"SecurityOpt": [f"seccomp={ALLOW_ALL}"]}, "seccomp profile"),
    ({"security_opt": ["seccomp:{}"]}, {"SecurityOpt": ["seccomp:{}"]}, "seccomp profile"),
    ({"security_opt": ["seccomp=default"]}, {"SecurityOpt": ["seccomp=default"]}, "seccomp profile"),
    ({"security_opt": ["label=type:container_runtime_t"]}, {"SecurityOpt": ["label=type:container_runtime_t"]},
     "SELinux type 'container_runtime_t'"),
    ({"security_opt": ["label:type:unconfined_t"]}, {"SecurityOpt": ["label:type:unconfined_t"]}, "SELinux type"),
    ({"security_opt": ["label=user:system_u"]}, {"SecurityOpt": ["label=user:system_u"]}, "SELinux user"),
    ({"security_opt": ["label=role:system_r"]}, {"SecurityOpt": ["label=role:system_r"]}, "SELinux role"),
    ({"security_opt": ["label=filetype:etc_t"]}, {"SecurityOpt": ["label=filetype:etc_t"]}, "SELinux filetype"),
    ({"security_opt": ["writable-cgroups"]}, {"SecurityOpt": ["writable-cgroups"]}, "cgroup filesystem writable"),
    ({"security_opt": ["writable-cgroups=1"]}, {"SecurityOpt": ["writable-cgroups=1"]}, "cgroup filesystem writable"),
    ({"pid_mode": "container:node-exporter"}, {"PidMode": "container:0123abcd"}, "another container's namespace"),
    ({"ipc_mode": "container:x"}, {"IpcMode": "container:0123abcd"}, "another container's namespace"),
    ({"cgroupns": "host"}, {"CgroupnsMode": "host"}, "the host's cgroup namespace"),
    ({"device_cgroup_rules": ["c *:* rwm"]}, {"DeviceCgroupRules": ["c *:* rwm", "b *:* rwm"]}, "device cgroup rules"),
    ({"mounts": [_volume({"type": "none", "o": "bind", "device": "."})]},
     {"Mounts": [_volume({"type": "none", "o": "bind", "device": "."})]}, "volume driver options"),
    ({"mounts": [_volume({"type": "none", "o": "bind", "device": "var/run"})]},
     {"Mounts": [_volume({"type": "none", "o": "bind", "device": "var/run"})]}, "volume driver options"),
    ({"mounts": [_volume({"type": "proc", "device": "proc"})]}, {"Mounts": [_volume({"type": "proc", "device": "proc"})]},
     "volume driver options"),
    ({"mounts": [_volume({"type": "overlay", "device": "overlay", "o": "lowerdir=/etc,upperdir=/tmp/u,workdir=/tmp/w"})]},
     {"Mounts": [_volume({"type": "overlay", "o": "lowerdir=/etc"})]}, "volume driver options"),
    ({"mounts": [{"Type": "image", "Source": "docker.io/library/unsigned:latest", "Target": "/tools"}]},
     {"Mounts": [{"Type": "image", "Source": "docker.io/library/unsigned:latest", "Target": "/tools"}]}, "image mount"),
    ({"mounts": [{"Type": "cluster", "Source": "csi-vol", "Target": "/c"}]},
     {"Mounts": [{"Type": "cluster", "Source": "csi-vol", "Target": "/c"}]}, "mount of type 'cluster'"),
]


@pytest.mark.parametrize(("request_options", "record", "problem"), WEAKENING)
def test_the_request_is_refused_naming_the_option_and_the_fix(request_options: dict[str, Any], record: dict[str, Any],
                                                                problem: str) -> None:
    with pytest.raises(HardeningError) as caught:
        harden_docker(request_options, Policy())
    [refusal] = caught.value.problems
    assert problem in refusal and "Fix:" in refusal, refusal
    assert next(iter(request_options)) in refusal  # the option, by the name the door used
    assert "nothing was created" in str(caught.value)


@pytest.mark.parametrize(("request_options", "record", "problem"), WEAKENING)
def test_the_engines_record_is_refused_naming_the_field(request_options: dict[str, Any], record: dict[str, Any],
                                                        problem: str) -> None:
    assert docker_violations(HARDENED, Policy()) == []
    [violation] = docker_violations({**HARDENED, **record, "SecurityOpt": HARDENED["SecurityOpt"]
                                     + record.get("SecurityOpt", [])}, Policy())
    assert problem in violation and f"HostConfig.{next(iter(record))}" in violation, violation


@pytest.mark.parametrize(
    "options",
    [
        {"security_opt": ["seccomp=builtin"]},  # moby's own default profile, by name
        {"security_opt": ["label=type:container_t", "label=level:s0:c1,c2", "label:type:container_kvm_t"]},
        {"security_opt": ["label=type:container_init_t", "apparmor=docker-default", "writable-cgroups=false"]},
        {"pid_mode": "", "ipc_mode": "shareable", "uts_mode": None, "cgroupns": "private", "device_cgroup_rules": []},
        {"ipc_mode": "private", "network_mode": "container:db"},  # a container's network: host networking is allowed too
        {"mounts": [Mount("/v", "named", "volume", driver_config=DriverConfig("local")), Mount("/t", None, "tmpfs"),
                    _volume({})]},
    ],
)
def test_the_engines_defaults_and_harmless_values_pass(options: dict[str, Any]) -> None:
    kwargs = harden_docker(options, Policy())
    assert {key: kwargs[key] for key in options if key != "security_opt"} == {
        key: value for key, value in options.items() if key != "security_opt"}


def test_what_the_gate_writes_passes_its_own_check_of_the_record() -> None:
    kwargs = harden_docker({"security_opt": ["seccomp=builtin"], "mounts": [Mount("/v", "named", "volume")]}, Policy())
    assert kwargs["cgroupns"] == "private"  # the engine's default on a cgroup v1 host is the host's
    assert harden_docker({"cgroupns": "private"}, Policy())["cgroupns"] == "private"
    recorded = dict(HostConfig(version="1.41", **kwargs))  # the Engine API body the docker SDK sends
    assert recorded["CgroupnsMode"] == "private"
    assert docker_violations({**recorded, "MaskedPaths": ENGINE_MASKED, "ReadonlyPaths": ENGINE_READONLY}, Policy()) == []
    assert docker_violations({**recorded, "CgroupnsMode": "host"}, Policy()) != []  # what cgroup v1 records unasked


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"MaskedPaths": []}, "HostConfig.MaskedPaths lacks ['/proc/kcore', '/proc/keys', '/sys/firmware']"),
        ({"ReadonlyPaths": []}, "HostConfig.ReadonlyPaths lacks ['/proc/sys', '/proc/sysrq-trigger']"),
        ({"MaskedPaths": ["/proc/asound", "/proc/keys", "/sys/firmware"]}, "HostConfig.MaskedPaths lacks ['/proc/kcore']"),
    ],
)
def test_system_paths_unmasked_in_the_record_are_refused(changes: dict[str, Any], problem: str) -> None:
    assert docker_violations({**HARDENED, "MaskedPaths": ENGINE_MASKED, "ReadonlyPaths": ENGINE_READONLY}, Policy()) == []
    assert docker_violations({**HARDENED, "MaskedPaths": None}, Policy()) == []  # unset: the engine's defaults apply
    assert [problem in p for p in docker_violations({**HARDENED, **changes}, Policy())] == [True]


def test_the_mounts_the_engine_set_up_are_refused_by_type() -> None:
    recorded = [{"Type": "volume", "Name": "v1", "Source": "/var/lib/docker/volumes/v1/_data", "Destination": "/v",
                 "Driver": "local", "RW": True},
                {"Type": "image", "Source": "", "Destination": "/tools", "RW": False}]
    [problem] = mount_violations(recorded, Policy())
    assert problem.startswith("Mounts[1] (-> /tools) is an image mount") and "Fix:" in problem


def test_driver_options_in_every_form_the_doors_pass_are_refused() -> None:
    sdk = Mount("/h", "v1", "volume", driver_config=DriverConfig("local", {"type": "tmpfs", "device": "tmpfs"}))
    provider = {"type": "volume", "source": "v1", "target": "/h", "driver_config": {"name": "local", "options": {"o": "bind"}}}
    for mount in (sdk, provider):
        with pytest.raises(HardeningError, match="volume driver options"):
            harden_docker({"mounts": [mount]}, Policy())
    # an allowed host path does not allow driver options: the options are not judged at all
    with pytest.raises(HardeningError, match="docker volume create"):
        harden_docker({"mounts": [_volume({"type": "none", "o": "bind", "device": "/srv/data"})]},
                      Policy(allowed_host_paths=("/srv/data",)))


def test_a_named_volumes_own_options_are_judged_from_its_record() -> None:
    from imagegate._hardening import volume_violations

    created_by_hand = [
        {"Name": "plain", "Driver": "local", "Options": None, "Mountpoint": "/var/lib/docker/volumes/plain/_data"},
        {"Name": "sized", "Driver": "local", "Options": {"size": "10G"}},
        {"Name": "nfs", "Driver": "some/plugin", "Options": {"device": ":/export"}},  # a plugin's own options
        {"Name": "root", "Driver": "local", "Options": {"type": "none", "o": "bind", "device": "."}},
        {"Name": "procfs", "Driver": "local", "Options": {"type": "proc", "device": "proc"}},
    ]
    problems = volume_violations(created_by_hand)
    assert [p.split(" was ")[0] for p in problems] == ["volume 'root'", "volume 'procfs'"]
    assert all("Fix:" in p for p in problems) and volume_violations(None) == []
