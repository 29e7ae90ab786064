"""The one hardening rule set: tables of good and bad options for both runtimes, the host-path rule (on real
paths, sockets and symlinks in a temporary directory), and the check of the engine's record of a container."""

from __future__ import annotations

import copy
import socket
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pytest

from imagegate import (
    DockerConfig,
    HardeningError,
    ImageSource,
    LaunchMismatch,
    LaunchPlan,
    Policy,
    RegistryClient,
    docker_violations,
    harden_docker,
    harden_pod,
    plan_launch,
    restricted_violations,
    verify_container,
)
from imagegate._hardening import clean_path, host_path_problem, mount_violations
from tests.support.fakeregistry import FakeRegistry
from tests.support.oci import make_image

ALLOW_NET = Policy(allowed_capabilities=("NET_BIND_SERVICE",))


# -- Docker -------------------------------------------------------------------------------------------


def test_docker_defaults_are_added_and_user_options_kept() -> None:
    given = {"mem_limit": "64m", "security_opt": ["apparmor=docker-default"], "cap_drop": ["NET_RAW"]}
    kwargs = harden_docker(given, Policy())
    assert kwargs["mem_limit"] == "64m"
    assert kwargs["security_opt"] == ["apparmor=docker-default", "no-new-privileges:true"]
    assert kwargs["cap_drop"] == ["ALL", "NET_RAW"]
    assert given["cap_drop"] == ["NET_RAW"]  # the input is not changed
    assert harden_docker({"security_opt": ["no-new-privileges"]}, Policy())["security_opt"] == ["no-new-privileges"]
    assert docker_violations({"CapDrop": kwargs["cap_drop"], "SecurityOpt": kwargs["security_opt"]}, Policy()) == []


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"privileged": True}, "privileged=True"),
        ({"cap_add": ["SYS_ADMIN"]}, "cap_add SYS_ADMIN is refused"),
        ({"cap_add": ["cap_net_bind_service"]}, "cap_add NET_BIND_SERVICE is refused"),
        ({"security_opt": ["no-new-privileges:false"]}, "allows privilege escalation"),
        ({"security_opt": ["no-new-privileges=false"]}, "allows privilege escalation"),
        ({"security_opt": ["seccomp=unconfined"]}, "confinement"),
        ({"security_opt": ["apparmor:unconfined"]}, "confinement"),
        ({"security_opt": ["label=disable"]}, "confinement"),
        ({"pid_mode": "host"}, "pid_mode='host'"),
        ({"ipc_mode": "host"}, "ipc_mode='host'"),
        ({"userns_mode": "host"}, "userns_mode='host'"),
    ],
)
def test_docker_weakening_is_refused_naming_the_option(options: dict[str, Any], problem: str) -> None:
    with pytest.raises(HardeningError) as caught:
        harden_docker(options, Policy())
    assert any(problem in p for p in caught.value.problems), caught.value.problems
    assert "nothing was created" in str(caught.value)


def test_a_capability_the_policy_allows_may_be_added_back() -> None:
    kwargs = harden_docker({"cap_add": ["net_bind_service"]}, ALLOW_NET)
    assert kwargs["cap_add"] == ["NET_BIND_SERVICE"] and kwargs["cap_drop"] == ["ALL"]


def test_host_network_stays_allowed_on_docker() -> None:
    assert harden_docker({"network_mode": "host"}, Policy())["network_mode"] == "host"


def test_docker_violations_read_the_engines_host_config() -> None:
    assert docker_violations({"Privileged": True, "CapDrop": None, "CapAdd": ["NET_ADMIN"], "SecurityOpt": None}, Policy()) == [
        "HostConfig.Privileged is true", "HostConfig.CapDrop lacks ALL", "HostConfig.CapAdd holds ['NET_ADMIN']",
        "HostConfig.SecurityOpt lacks no-new-privileges",
    ]


# -- Kubernetes ------------------------------------------------------------------------------------------


def pod(**spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "main", "image": "x"}], **spec}}


def test_every_container_gets_the_restricted_defaults() -> None:
    given = pod(initContainers=[{"name": "init", "image": "y"}], ephemeralContainers=[{"name": "debug", "image": "z"}])
    hardened = harden_pod(given, Policy(), uid=10001, gid=10002)
    assert hardened["spec"]["securityContext"] == {
        "runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}, "runAsUser": 10001, "runAsGroup": 10002,
    }
    for field in ("initContainers", "containers", "ephemeralContainers"):
        (container,) = hardened["spec"][field]
        assert container["securityContext"] == {
            "allowPrivilegeEscalation": False, "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        }
    assert "securityContext" not in given["spec"]  # the input is not changed
    assert restricted_violations(hardened) == []


def test_user_values_are_kept_where_they_satisfy_the_profile() -> None:
    given = pod(securityContext={"fsGroup": 2000, "runAsUser": 2000, "seccompProfile": {"type": "Localhost", "localhostProfile": "p.json"}})
    given["spec"]["containers"][0]["securityContext"] = {"readOnlyRootFilesystem": True, "capabilities": {"drop": ["NET_RAW"]}}
    hardened = harden_pod(given, Policy(), uid=10001)
    assert hardened["spec"]["securityContext"]["runAsUser"] == 2000  # yours wins
    assert hardened["spec"]["securityContext"]["seccompProfile"]["type"] == "Localhost"
    container = hardened["spec"]["containers"][0]["securityContext"]
    assert container["readOnlyRootFilesystem"] is True and container["capabilities"]["drop"] == ["ALL", "NET_RAW"]
    assert "seccompProfile" not in container  # the pod's own profile is not overridden per container


@pytest.mark.parametrize(
    ("container", "problem"),
    [
        ({"allowPrivilegeEscalation": True}, "allowPrivilegeEscalation must be false"),
        ({"privileged": True}, "privileged must be false"),
        ({"runAsUser": 0}, "runAsUser must not be 0"),
        ({"runAsNonRoot": False}, "runAsNonRoot must be true"),
        ({"capabilities": {"add": ["NET_ADMIN"]}}, "NET_BIND_SERVICE"),
        ({"capabilities": {"add": ["NET_BIND_SERVICE"]}}, "only when the policy allows it"),
        ({"seccompProfile": {"type": "Unconfined"}}, "seccompProfile.type"),
    ],
)
def test_kubernetes_contradictions_are_refused_naming_the_field(container: dict[str, Any], problem: str) -> None:
    given = pod()
    given["spec"]["containers"][0]["securityContext"] = container
    with pytest.raises(HardeningError) as caught:
        harden_pod(given, Policy(), uid=10001)
    assert any(problem in p and "containers[main]" in p for p in caught.value.problems), caught.value.problems


def test_net_bind_service_with_the_policy() -> None:
    given = pod()
    given["spec"]["containers"][0]["securityContext"] = {"capabilities": {"add": ["NET_BIND_SERVICE"]}}
    assert restricted_violations(harden_pod(given, ALLOW_NET, uid=10001), ALLOW_NET) == []


GOOD: dict[str, Any] = {
    "spec": {
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{"name": "base", "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}],
        "volumes": [{"name": "x", "emptyDir": {}}],
    }
}


def _with(path: list[Any], value: Any) -> dict[str, Any]:
    result = copy.deepcopy(GOOD)
    node: Any = result
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return result


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (["spec", "hostNetwork"], True, "hostNetwork"),
        (["spec", "hostPID"], True, "hostPID"),
        (["spec", "securityContext", "runAsNonRoot"], False, "runAsNonRoot must be true"),
        (["spec", "securityContext", "runAsUser"], 0, "runAsUser must not be 0"),
        (["spec", "securityContext", "seccompProfile"], {"type": "Unconfined"}, "seccompProfile"),
        (["spec", "containers", 0, "securityContext", "privileged"], True, "privileged"),
        (["spec", "containers", 0, "securityContext", "allowPrivilegeEscalation"], True, "allowPrivilegeEscalation"),
        (["spec", "containers", 0, "securityContext", "capabilities"], {"drop": ["NET_RAW"]}, "drop must include ALL"),
        (["spec", "containers", 0, "securityContext", "capabilities"], {"drop": ["ALL"], "add": ["SYS_ADMIN"]}, "NET_BIND_SERVICE"),
        (["spec", "containers", 0, "ports"], [{"containerPort": 80, "hostPort": 80}], "hostPort"),
        (["spec", "volumes"], [{"name": "h", "hostPath": {"path": "/"}}], "hostPath"),
    ],
)
def test_restricted_rules_catch_each_violation(path: list[Any], value: Any, message: str) -> None:
    assert restricted_violations(GOOD) == []
    problems = restricted_violations(_with(path, value))
    assert any(message in p for p in problems), problems


def test_a_hostpath_volume_is_refused_on_kubernetes_whatever_the_policy_allows() -> None:
    """The restricted profile allows no hostPath volume at all; allowed-host-paths is Docker's only."""
    given = pod(volumes=[{"name": "sock", "hostPath": {"path": "/var/run/docker.sock", "type": "Socket"}}])
    for policy in (Policy(), Policy(allowed_host_paths=("/var/run/docker.sock",))):
        with pytest.raises(HardeningError) as caught:
            harden_pod(given, policy, uid=10001)
        assert any("'sock'" in p and "hostPath" in p for p in caught.value.problems), caught.value.problems


# -- Docker: host paths ----------------------------------------------------------------------------------



@pytest.mark.parametrize(
    ("given", "cleaned"),
    [  # Go's filepath.Clean, which the engine applies to a bind source (it records //etc// as /etc)
        ("/", "/"), ("//", "/"), ("//var/run/docker.sock", "/var/run/docker.sock"), ("/etc/", "/etc"),
        ("/etc//", "/etc"), ("/var/run/../run/docker.sock", "/var/run/docker.sock"), ("/../etc", "/etc"),
        ("/./a/./b/.", "/a/b"), ("/a/b/../../..", "/"), ("/a/..b/c", "/a/..b/c"),
    ],
)
def test_clean_path_is_gos_filepath_clean(given: str, cleaned: str) -> None:
    assert clean_path(given) == cleaned


@pytest.fixture
def host_dir() -> Iterator[Path]:
    """A short directory (a Unix socket path must fit 108 bytes) with a socket named like Docker's, another
    socket, and symlinks to each and to /etc."""
    with tempfile.TemporaryDirectory(prefix="ig-", dir="/tmp") as name:
        base = Path(name)
        sockets = []
        for sock_name in ("docker.sock", "svc.sock"):
            server = socket.socket(socket.AF_UNIX)
            server.bind(str(base / sock_name))
            sockets.append(server)
        (base / "data").mkdir()
        (base / "to-docker").symlink_to(base / "docker.sock")
        (base / "to-svc").symlink_to(base / "svc.sock")
        (base / "to-etc").symlink_to("/etc")
        (base / "to-root").symlink_to("/")
        try:
            yield base
        finally:
            for server in sockets:
                server.close()


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("/var/run/docker.sock", "docker.sock is a container engine's API socket"),
        ("//var/run/docker.sock", "docker.sock is a container engine's API socket"),
        ("/var/run/../run/docker.sock", "docker.sock is a container engine's API socket"),
        ("/run/containerd/containerd.sock", "containerd.sock"),
        ("/home/me/.docker/run/docker.sock", "docker.sock is a container engine's API socket"),
        ("/", "the host's whole filesystem"),
        ("//", "the host's whole filesystem"),
        ("/etc", "/etc is the host's configuration"),
        ("/etc/", "/etc is the host's configuration"),
        ("/etc//shadow", "/etc is the host's configuration"),
        ("/proc", "/proc is"), ("/proc/1/root", "/proc is"), ("/sys/fs/cgroup", "/sys is"), ("/dev/sda", "/dev is"),
        ("/boot", "/boot is"), ("/root/.ssh", "/root is"), ("/run", "/run is"), ("/run/containerd", "/run is"),
        ("/var/lib/docker", "/var/lib/docker is"), ("/var/lib/docker/volumes/x/_data", "/var/lib/docker is"),
        ("/var/lib/containerd", "/var/lib/containerd is"), ("/var/lib/kubelet/pods", "/var/lib/kubelet is"),
        ("/var", "it holds /var/run"), ("/var/lib", "it holds /var/lib/docker"), ("/var/lib/", "it holds /var/lib/docker"),
    ],
)
def test_host_paths_that_give_away_the_host_are_refused(source: str, reason: str) -> None:
    problem = host_path_problem(source, Policy(), where="mounts[0]")
    assert problem is not None and reason in problem, problem
    assert problem.startswith("mounts[0] bind-mounts") and "allowed-host-paths" in problem and "Fix:" in problem


@pytest.mark.parametrize("source", ["/etcetera", "/etc2/x", "/home/me/project", "/tmp", "/srv/data/", "/var/log/app",
                                    "/var/lib/docker2", "/runner/work", "/opt/proc"])
def test_host_paths_of_your_own_pass(source: str) -> None:
    assert host_path_problem(source, Policy(), where="mounts[0]") is None


@pytest.mark.parametrize("source", ["data", "./data", "data/x", "../etc", "~/data"])
def test_relative_bind_sources_are_refused_as_the_engine_refuses_them(source: str) -> None:
    problem = host_path_problem(source, Policy(), where="binds[0]")
    assert problem is not None and "not an absolute host path" in problem and "binds[0]" in problem


def test_symlinks_are_followed_as_the_engine_follows_them(host_dir: Path) -> None:
    for link, reason in [("to-docker", "docker.sock is a container engine's API socket"), ("to-svc", "a Unix socket"),
                         ("to-etc", "/etc is the host's configuration"), ("to-root", "the host's whole filesystem"),
                         ("svc.sock", "a Unix socket"), ("to-etc/", "/etc is")]:
        problem = host_path_problem(f"{host_dir}/{link}", Policy(), where="mounts[0]")
        assert problem is not None and reason in problem, (link, problem)
        assert ("(the host's " in problem) == link.startswith("to-"), problem  # a symlink names where it leads
    assert host_path_problem(f"{host_dir}/data", Policy(), where="mounts[0]") is None
    assert host_path_problem(f"{host_dir}/to-etc/../data", Policy(), where="m") is None  # cleaned first, as the engine does


def test_allowed_host_paths_allow_exactly_what_they_list(host_dir: Path) -> None:
    docker_sock = Policy(allowed_host_paths=("/var/run/docker.sock",))
    for source in ("/var/run/docker.sock", "//var/run//docker.sock", "/run/docker.sock"):
        assert host_path_problem(source, docker_sock, where="m") is None, source
    for source in ("/var/run", "/run", "/run/containerd/containerd.sock", "/var/run/docker.sock.d", "/"):
        assert host_path_problem(source, docker_sock, where="m") is not None, source
    own = Policy(allowed_host_paths=(f"{host_dir}/svc.sock", "/etc/ssl/certs/"))
    assert host_path_problem(f"{host_dir}/svc.sock", own, where="m") is None
    assert host_path_problem(f"{host_dir}/to-svc", own, where="m") is None  # the socket it resolves to is allowed
    assert host_path_problem("/etc/ssl/certs/ca-certificates.crt", own, where="m") is None
    assert host_path_problem("/etc/ssl", own, where="m") is not None
    assert host_path_problem("/etc/ssl/certsx", own, where="m") is not None


def test_a_symlink_planted_at_an_allowed_path_does_not_widen_it(host_dir: Path) -> None:
    """An allowed path the rule would pass anyway is not resolved: pointing it at / must not allow /etc."""
    policy = Policy(allowed_host_paths=(f"{host_dir}/to-root",))
    problem = host_path_problem(f"{host_dir}/to-root/etc", policy, where="m")
    assert problem is not None and "/etc is" in problem
    assert host_path_problem("/etc", policy, where="m") is not None


@pytest.mark.parametrize(
    ("options", "where"),
    [
        ({"mounts": [{"Type": "bind", "Source": "/var/run/docker.sock", "Target": "/s"}]}, "mounts[0] (-> /s)"),
        ({"mounts": [{"type": "bind", "source": "/etc", "target": "/e"}]}, "mounts[0] (-> /e)"),  # the provider's dicts
        ({"mounts": [{"Source": "/tmp", "source": "/etc", "Type": "bind", "Target": "/e"}]}, "mounts[0]"),  # both read
        ({"mounts": [{"Source": "/proc", "Target": "/p"}]}, "mounts[0]"),  # no type: a host path all the same
        ({"mounts": ["/var/run/docker.sock:/s"]}, "is not a mount"),
        ({"binds": ["/var/run/docker.sock:/s"]}, "binds[0] '/var/run/docker.sock:/s'"),
        ({"binds": {"/": {"bind": "/host", "mode": "ro"}}}, "binds[0] '/'"),
        ({"volumes": ["/data:/data", "//etc/:/e:ro"]}, "volumes[1]"),
        ({"volumes": {"/var/lib/docker": {"bind": "/d"}}}, "volumes[0]"),
        ({"binds": ["./data:/data"]}, "not an absolute host path"),
        ({"devices": ["/dev/sda:/dev/xvda:rwm"]}, "devices[0] passes the host device '/dev/sda'"),
    ],
)
def test_docker_bind_mounts_are_checked_in_every_form_the_doors_pass(options: dict[str, Any], where: str) -> None:
    with pytest.raises(HardeningError) as caught:
        harden_docker(options, Policy())
    assert any(where in p for p in caught.value.problems), caught.value.problems
    assert "nothing was created" in str(caught.value) and "allowed-host-paths" in str(caught.value)


def test_docker_mounts_of_your_own_pass_unchanged(tmp_path: Path) -> None:
    from docker.types import Mount

    mounts = [Mount("/data", str(tmp_path), "bind", read_only=True), Mount("/v", "named", "volume"),
              Mount("/t", None, "tmpfs")]
    given = {"mounts": mounts, "binds": [f"{tmp_path}:/in:ro", "named:/n", "/anonymous"],
             "volumes": {str(tmp_path): {"bind": "/x", "mode": "rw"}}}
    kwargs = harden_docker(given, Policy())
    assert kwargs["mounts"] is mounts and kwargs["binds"] == given["binds"] and kwargs["volumes"] == given["volumes"]
    from docker.types import Mount as M

    with pytest.raises(HardeningError, match="docker.sock"):  # the docker SDK's own Mount object
        harden_docker({"mounts": [M("/s", "/var/run/docker.sock", "bind")]}, Policy())
    allowed = Policy(allowed_host_paths=("/var/run/docker.sock",))
    assert harden_docker({"mounts": [M("/s", "/var/run/docker.sock", "bind")]}, allowed)["cap_drop"] == ["ALL"]


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"security_opt": ["no-new-privileges:f"]}, "allows privilege escalation"),
        ({"security_opt": ["no-new-privileges=0"]}, "allows privilege escalation"),
        ({"security_opt": ["no-new-privileges", "no-new-privileges=False"]}, "allows privilege escalation"),
        ({"security_opt": ["label=type:spc_t"]}, "confinement"),
        ({"security_opt": ["disable"]}, "confinement"),
        ({"uts_mode": "host"}, "uts_mode='host'"),
    ],
)
def test_docker_security_options_are_read_as_the_engine_reads_them(options: dict[str, Any], problem: str) -> None:
    with pytest.raises(HardeningError) as caught:
        harden_docker(options, Policy())
    assert any(problem in p for p in caught.value.problems), caught.value.problems


def test_a_true_no_new_privileges_in_any_spelling_is_kept_as_given() -> None:
    for opt in ("no-new-privileges=TRUE", "no-new-privileges:1", "no-new-privileges=t"):
        assert harden_docker({"security_opt": [opt]}, Policy())["security_opt"] == [opt]


HARDENED = {"CapDrop": ["ALL"], "SecurityOpt": ["no-new-privileges:true"], "Privileged": False}


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"SecurityOpt": ["no-new-privileges:true", "no-new-privileges:false"]}, "lacks no-new-privileges"),
        ({"SecurityOpt": ["no-new-privileges:true", "seccomp=unconfined"]}, "'seccomp=unconfined'"),
        ({"PidMode": "host"}, "HostConfig.PidMode is 'host'"),
        ({"IpcMode": "host"}, "HostConfig.IpcMode"),
        ({"UTSMode": "host"}, "HostConfig.UTSMode"),
        ({"UsernsMode": "host"}, "HostConfig.UsernsMode"),
        ({"Binds": ["/var/run/docker.sock:/s"]}, "HostConfig.Binds[0]"),
        ({"Mounts": [{"Type": "bind", "Source": "/etc", "Target": "/e"}]}, "HostConfig.Mounts[0] (-> /e)"),
        ({"Devices": [{"PathOnHost": "/dev/mem", "PathInContainer": "/dev/mem", "CgroupPermissions": "rwm"}]},
         "HostConfig.Devices[0] passes the host device '/dev/mem'"),
    ],
)
def test_docker_violations_read_every_rule_back_from_the_engines_record(changes: dict[str, Any], problem: str) -> None:
    assert docker_violations(HARDENED, Policy()) == []
    problems = docker_violations({**HARDENED, **changes}, Policy())
    assert any(problem in p for p in problems), problems


def test_mount_violations_read_the_engines_mounts(host_dir: Path) -> None:
    recorded = [
        {"Type": "bind", "Source": f"{host_dir}/data", "Destination": "/data", "RW": True},
        {"Type": "volume", "Name": "v", "Source": "/var/lib/docker/volumes/v/_data", "Destination": "/v", "Driver": "local"},
        {"Type": "tmpfs", "Source": "", "Destination": "/t"},
    ]
    assert mount_violations(recorded, Policy()) == [] and mount_violations(None, Policy()) == []
    # the engine records the cleaned path it was given, not where a symlink leads: resolve it here
    recorded.append({"Type": "bind", "Source": f"{host_dir}/to-docker", "Destination": "/s", "RW": True})
    [problem] = mount_violations(recorded, Policy())
    assert problem.startswith("Mounts[3] (-> /s)") and "docker.sock" in problem


# -- Docker: the engine's record of a created container --------------------------------------------------



def _plan(user: str | None = None) -> LaunchPlan:
    registry = FakeRegistry()
    registry.put_image("team/etl", make_image(user="10001"), tag="1.4.2")
    client = RegistryClient(transport=registry.transport, docker_config=DockerConfig({}))
    return plan_launch(ImageSource(image="registry.test/team/etl:1.4.2"), user=user, client=client)


def _record(plan: LaunchPlan, **changes: Any) -> dict[str, Any]:
    record = {"Id": "c0ffee" * 10, "Image": (plan.report.facts or {})["config_digest"], "Config": {"User": "10001"},
              "HostConfig": dict(HARDENED), "Mounts": []}
    for key, value in changes.items():
        if key in ("HostConfig", "Config"):
            record[key] = {**record[key], **value}
        else:
            record[key] = value
    return record


def test_verify_container_passes_the_plan_and_returns_the_image_id() -> None:
    plan = _plan()
    removed: list[bool] = []
    assert verify_container(_record(plan), plan, Policy(), remove=lambda: removed.append(True)) == plan.report.facts["config_digest"]
    as_user = _plan("10002:10002")
    assert verify_container(_record(as_user, Config={"User": "10002:10002"}), as_user, Policy())
    assert removed == []


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"HostConfig": {"Privileged": True}}, "HostConfig.Privileged is true"),
        ({"HostConfig": {"CapAdd": ["SYS_ADMIN"]}}, "HostConfig.CapAdd holds ['SYS_ADMIN']"),
        ({"HostConfig": {"SecurityOpt": []}}, "lacks no-new-privileges"),
        ({"HostConfig": {"Binds": ["/var/run/docker.sock:/s"]}}, "docker.sock"),
        ({"Mounts": [{"Type": "bind", "Source": "/", "Destination": "/host"}]}, "the host's whole filesystem"),
        ({"Config": {"User": "0"}}, "Config.User is '0', not the user imagegate checked ('10001')"),
        ({"Config": {"User": ""}}, "Config.User is ''"),
    ],
)
def test_verify_container_refuses_a_record_that_is_not_the_plan_and_removes_it(changes: dict[str, Any], problem: str) -> None:
    plan = _plan()
    removed: list[bool] = []
    with pytest.raises(HardeningError) as caught:
        verify_container(_record(plan, **changes), plan, Policy(), remove=lambda: removed.append(True))
    assert removed == [True]
    assert caught.value.container == "c0ffee" * 10 and any(problem in p for p in caught.value.problems), caught.value.problems
    assert "removed without starting" in str(caught.value) and "nothing was created" not in str(caught.value)


def test_verify_container_reads_each_named_volumes_own_record() -> None:
    """The container's record names a volume only; the volume's record says it binds the host's /etc."""
    plan = _plan()
    mounts = [{"Type": "volume", "Name": "data", "Destination": "/data", "Driver": "local"},
              {"Type": "volume", "Name": "scratch", "Destination": "/scratch", "Driver": "local"}]
    volumes = {"data": {"Name": "data", "Driver": "local", "Options": {"type": "none", "o": "bind", "device": "/etc"}},
               "scratch": {"Name": "scratch", "Driver": "local", "Options": None}}
    looked: list[str] = []

    def inspect_volume(name: str) -> dict[str, Any]:
        looked.append(name)
        if name not in volumes:
            raise LookupError(f"no such volume: {name}")
        return volumes[name]

    record = _record(plan, Mounts=mounts)
    assert verify_container(record, plan, Policy())  # without the lookup the record alone cannot tell
    removed: list[bool] = []
    with pytest.raises(HardeningError) as caught:
        verify_container(record, plan, Policy(), remove=lambda: removed.append(True), inspect_volume=inspect_volume)
    assert removed == [True] and looked == ["data", "scratch"]
    assert [p for p in caught.value.problems if "volume 'data'" in p] and not [p for p in caught.value.problems if "scratch" in p]
    with pytest.raises(HardeningError, match="volume 'gone'"):  # a volume that cannot be looked up is not passed
        verify_container(_record(plan, Mounts=[{"Type": "volume", "Name": "gone"}]), plan, Policy(),
                         inspect_volume=inspect_volume)
    volumes["data"]["Options"] = {}
    assert verify_container(record, plan, Policy(), inspect_volume=inspect_volume)


def test_verify_container_never_passes_a_volume_it_did_not_read() -> None:
    """Past the lookup bound, or without a name, a volume is refused rather than passed unread: the one
    left unread could be the one that binds the host's /etc."""
    plan = _plan()
    looked: list[str] = []

    def inspect_volume(name: str) -> dict[str, Any]:
        looked.append(name)
        return {"Name": name, "Driver": "local", "Options": None}

    many = [{"Type": "volume", "Name": f"v{i}", "Destination": f"/v{i}"} for i in range(65)]
    with pytest.raises(HardeningError, match="65 named volumes are mounted; imagegate looks up at most 64"):
        verify_container(_record(plan, Mounts=many), plan, Policy(), inspect_volume=inspect_volume)
    assert len(looked) == 64
    assert verify_container(_record(plan, Mounts=many[:64]), plan, Policy(), inspect_volume=inspect_volume)
    with pytest.raises(HardeningError, match="a volume mount has no volume name"):
        verify_container(_record(plan, Mounts=[{"Type": "volume", "Name": "", "Destination": "/d"}]), plan, Policy(),
                         inspect_volume=inspect_volume)


def test_verify_container_refuses_another_image_first() -> None:
    plan = _plan()
    removed: list[bool] = []
    with pytest.raises(LaunchMismatch) as caught:
        verify_container(_record(plan, Image="sha256:" + "e" * 64, HostConfig={"Privileged": True}), plan, Policy(),
                         remove=lambda: removed.append(True))
    assert removed == [True] and caught.value.actual == "sha256:" + "e" * 64


def test_a_failed_removal_is_noted_on_the_refusal() -> None:
    plan = _plan()

    def remove() -> None:
        raise OSError("engine gone")

    with pytest.raises(HardeningError) as caught:
        verify_container(_record(plan, HostConfig={"Privileged": True}), plan, Policy(), remove=remove)
    assert any("engine gone" in note and "never start it" in note for note in caught.value.__notes__)
