"""``imagegate run`` without an engine: argument parsing, Docker's option grammar, and the translation of a
plan + spec into the Engine API's arguments (hardening, labels, the pinned digest). The launch itself is
tested against the real engine in tests/integration/test_run_stack.py."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import imagegate
from imagegate import (
    Bind,
    DockerConfig,
    HardeningError,
    ImageSource,
    LaunchPlan,
    Policy,
    RegistryClient,
    RunOptionError,
    RunSpec,
    docker_launch,
    plan_launch,
)
from imagegate._hardening import docker_violations
from imagegate.cli import UsageError, main, parse_run, split_command
from tests.support.fakeregistry import FakeRegistry
from tests.support.oci import make_image

HOST = "registry.test"
REF = f"{HOST}/team/etl:1.4.2"


@pytest.fixture
def registry() -> FakeRegistry:
    reg = FakeRegistry()
    reg.put_image("team/etl", make_image(user="10001"), tag="1.4.2")
    return reg


@pytest.fixture
def plan(registry: FakeRegistry) -> LaunchPlan:
    client = RegistryClient(transport=registry.transport, docker_config=DockerConfig({}))
    return plan_launch(ImageSource(image=REF), client=client)


# -- the command line ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "head", "command"),
    [
        (["run", "img:1", "--", "sh", "-c", "exit 3"], ["run", "img:1"], ["sh", "-c", "exit 3"]),
        (["--debug", "run", "img:1", "--", "tool", "--json", "--", "x"], ["--debug", "run", "img:1"], ["tool", "--json", "--", "x"]),
        (["run", "img:1"], ["run", "img:1"], None),
        (["run", "img:1", "--"], ["run", "img:1"], []),
        (["check", "--", "img:1"], ["check", "--", "img:1"], None),  # only run has a container command
    ],
)
def test_split_command_ends_imagegates_options_at_the_first_double_dash(argv: list[str], head: list[str], command: list[str] | None) -> None:
    assert split_command(argv) == (head, command)


def test_a_reference_and_a_command(tmp_path: Path) -> None:
    request = parse_run([REF, "--", "sh", "-c", "exit 3"], cwd=tmp_path, environ={})
    assert request.source.image == REF and request.source.lock_name is None and request.source.job_dir is None
    assert request.spec.command == ("sh", "-c", "exit 3")
    assert request.spec.remove is True and request.spec.entrypoint is None and request.spec.user is None
    assert request.task == REF


def test_no_double_dash_keeps_the_images_cmd(tmp_path: Path) -> None:
    assert parse_run([REF], cwd=tmp_path, environ={}).spec.command is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "got none"),
        ([REF, "--lock-name", "etl"], "got REF, --lock-name"),
        (["--lock-name", "etl", "--job-dir", "jobs/etl", "--repository", "r.example/x"], "got --lock-name, --job-dir"),
        (["--job-dir", "jobs/etl"], "needs --repository"),
        ([REF, "--repository", "r.example/x"], "--repository only go with --job-dir"),
        ([REF, "--build-arg", "A=1"], "--build-arg only go with --job-dir"),
        ([REF, "--lock-file", "x.json"], "--lock-file goes with --lock-name"),
        ([REF, "--"], "nothing after --"),
        ([REF, "--rm", "--keep"], "not allowed with argument"),
        ([REF, "sh", "-c", "exit 1"], "a command for the container goes after --"),
        ([REF, "--stop-timeout", "soon"], "invalid int value"),
    ],
)
def test_usage_errors_name_the_fix(argv: list[str], message: str, tmp_path: Path) -> None:
    with pytest.raises(UsageError) as caught:
        parse_run(argv, cwd=tmp_path, environ={})
    assert message in str(caught.value)


def test_sources_become_the_gates_image_source(tmp_path: Path) -> None:
    (tmp_path / "jobs" / "etl").mkdir(parents=True)
    locked = parse_run(["--lock-name", "etl", "--lock-file", "locks/imagegate.lock.json"], cwd=tmp_path, environ={})
    assert locked.source.lock_name == "etl" and locked.source.lock_file == "locks/imagegate.lock.json"
    assert locked.source.lock_path() == tmp_path / "locks" / "imagegate.lock.json" and locked.task == "lock:etl"
    job = parse_run(["--job-dir", "jobs/etl", "--repository", "r.example/jobs/etl", "--build-arg", "BASE=b@sha256:" + "a" * 64,
                     "-f", "jobs/etl/Dockerfile.prod", "--target", "final", "--tag-policy", "both"], cwd=tmp_path, environ={})
    assert job.source.job_dir == "jobs/etl" and job.source.repository == "r.example/jobs/etl"
    assert job.source.build.build_args == {"BASE": "b@sha256:" + "a" * 64} and job.source.build.target == "final"
    assert job.source.build.dockerfile == str(tmp_path / "jobs" / "etl" / "Dockerfile.prod")
    assert job.source.build.tag_policy == "both" and job.source.build.lint == "on-build"
    assert job.source.base == tmp_path


def test_docker_run_options_become_the_spec(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "run.env").write_text("# settings\nA=from-file\nB=file\n")
    request = parse_run(
        [REF, "-e", "A=from-flag", "--env-file", "run.env", "-e", "HOME_COPY", "-e", "MISSING", "-v", "./data:/data:ro",
         "--mount", f"type=bind,source={tmp_path},target=/work", "-u", "10001:10001", "--entrypoint", "", "-w", "/work",
         "--network", "none", "--name", "etl-local", "-l", "team=data", "--cap-add", "NET_BIND_SERVICE", "--read-only",
         "--keep", "--stop-timeout", "3", "--", "run.sh"],
        cwd=tmp_path, environ={"HOME_COPY": "/root"},
    )
    spec = request.spec
    assert spec.env == {"A": "from-flag", "B": "file", "HOME_COPY": "/root"}  # -e after --env-file; unset bare KEY left out
    assert spec.binds == (Bind(str(tmp_path / "data"), "/data", True), Bind(str(tmp_path), "/work", False))
    assert (spec.user, spec.entrypoint, spec.workdir, spec.network, spec.name) == ("10001:10001", "", "/work", "none", "etl-local")
    assert spec.labels == {"team": "data"} and spec.cap_add == ("NET_BIND_SERVICE",) and spec.read_only
    assert spec.remove is False and spec.stop_timeout == 3 and spec.command == ("run.sh",)


def test_main_refuses_a_weakening_option_before_asking_any_registry(capsys: pytest.CaptureFixture[str]) -> None:
    # port 1 refuses connections: had the registry been asked, this would be RegistryUnreachable
    code = main(["run", "--json", "--privileged", "127.0.0.1:1/team/etl:1.0.0"])
    error = json.loads(capsys.readouterr().out)["error"]
    assert code == 2 and error["type"] == "HardeningError" and "privileged" in error["message"]


def test_main_refuses_a_bind_of_the_engines_socket_before_asking_any_registry(capsys: pytest.CaptureFixture[str],
                                                                               tmp_path: Path) -> None:
    sock = tmp_path / "docker.sock"  # any file by that name: an engine socket wherever it lives, and through a symlink
    sock.touch()
    (tmp_path / "link").symlink_to(sock)
    for flag in (["-v", "./link:/var/run/docker.sock"], ["--mount", f"type=bind,source={sock},target=/s"]):
        with pytest.MonkeyPatch.context() as patch:
            patch.chdir(tmp_path)
            code = main(["run", "--json", *flag, "127.0.0.1:1/team/etl:1.0.0"])
        error = json.loads(capsys.readouterr().out)["error"]
        assert code == 2 and error["type"] == "HardeningError", error
        assert "docker.sock is a container engine's API socket" in error["message"]
        assert "allowed-host-paths" in error["message"] and "nothing was created" in error["message"]


def test_a_bind_the_policy_allows_is_passed_on(plan: LaunchPlan, tmp_path: Path) -> None:
    sock = tmp_path / "docker.sock"
    sock.touch()
    spec = RunSpec(binds=(Bind(str(sock), "/var/run/docker.sock"),))
    with pytest.raises(HardeningError, match="docker.sock"):
        docker_launch(plan, spec, Policy(), launch_id="L")
    launch = docker_launch(plan, spec, Policy(allowed_host_paths=(str(sock),)), launch_id="L")
    assert launch.host_config["mounts"] == [{"Type": "bind", "Source": str(sock), "Target": "/var/run/docker.sock",
                                             "ReadOnly": False}]


def test_main_reads_no_option_from_the_containers_command(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", "--", "tool", "--json"])  # --json is the tool's: no JSON object, a usage error
    captured = capsys.readouterr()
    assert code == 2 and captured.out == "" and "name exactly one image" in captured.err


def test_main_usage_error_as_one_json_object(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", "--json", "--lock-name", "etl", REF])
    assert code == 2 and json.loads(capsys.readouterr().out)["error"]["type"] == "UsageError"


# -- Docker's option grammar ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "source", "target", "read_only"),
    [
        ("./data:/data", "data", "/data", False),
        ("./data:/data:ro", "data", "/data", True),
        ("./data:/data:rw", "data", "/data", False),
        ("./data:/data:ro,Z", "data", "/data", True),
        ("./data/../data:/data/./x", "data", "/data/x", False),
        (".:/src", "", "/src", False),
    ],
)
def test_volume_grammar(tmp_path: Path, text: str, source: str, target: str, read_only: bool) -> None:
    (tmp_path / "data").mkdir()
    bind = Bind.parse_volume(text, cwd=tmp_path)
    assert bind == Bind(os.path.normpath(str(tmp_path / source)), target, read_only)
    assert bind.to_api() == {"Type": "bind", "Source": bind.source, "Target": target, "ReadOnly": read_only}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("data:/data", "named volume"),
        ("/data", "expected HOST_PATH:CONTAINER_PATH"),
        ("./data:/data:ro:x", "expected HOST_PATH:CONTAINER_PATH"),
        ("./data:data", "must be absolute"),
        ("./data:/data:shared", "unsupported option 'shared'"),
        ("./data:/data:ro,rw", "both ro and rw"),
        ("./missing:/data", "does not exist (Docker would create it, owned by root)"),
        (":/data", "expected HOST_PATH:CONTAINER_PATH"),
    ],
)
def test_volume_refusals(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "data").mkdir()
    with pytest.raises(RunOptionError) as caught:
        Bind.parse_volume(text, cwd=tmp_path)
    assert message in str(caught.value) and caught.value.option == "-v"


@pytest.mark.parametrize(
    ("text", "read_only"),
    [
        ("type=bind,source=./data,target=/data", False),
        ("type=bind,src=./data,dst=/data,readonly", True),
        ("type=bind,source=./data,destination=/data,ro=true", True),
        ("type=bind,source=./data,target=/data,readonly=false", False),
        ('type=bind,"source=./data",target=/data,readonly=1', True),
    ],
)
def test_mount_grammar(tmp_path: Path, text: str, read_only: bool) -> None:
    (tmp_path / "data").mkdir()
    assert Bind.parse_mount(text, cwd=tmp_path) == Bind(str(tmp_path / "data"), "/data", read_only)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("source=./data,target=/data", "add type=bind"),
        ("type=volume,source=v,target=/data", "add type=bind"),
        ("type=bind,source=./data,target=/data,bind-propagation=rshared", "unsupported key 'bind-propagation'"),
        ("type=bind,source=./data", "needs source=HOST_PATH and target"),
        ("type=bind,source=./data,target=/data,target=/x", "given twice"),
        ("type=bind,source=./data,target=/data,readonly=maybe", "is not true or false"),
        ("type=bind,source,target=/data", "needs a value"),
        ("type=bind,source=/nonexistent-imagegate,target=/data", "does not exist"),
    ],
)
def test_mount_refusals(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "data").mkdir()
    with pytest.raises(RunOptionError) as caught:
        Bind.parse_mount(text, cwd=tmp_path)
    assert message in str(caught.value) and caught.value.option == "--mount"


def test_env_file_is_read_as_docker_reads_it(tmp_path: Path) -> None:
    path = tmp_path / "run.env"
    path.write_bytes(b'\xef\xbb\xbfA=1\r\n  # a comment\n\n  B="quoted" stays  \nC=\nD=x=y\nFROM_HOST\nNOT_SET\n')
    from imagegate._runspec import parse_env_file

    assert parse_env_file(path, environ={"FROM_HOST": "h"}) == {
        "A": "1", "B": '"quoted" stays  ', "C": "", "D": "x=y", "FROM_HOST": "h",
    }


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"A B=1\n", "contains whitespace"),
        (b"=1\n", "no variable name"),
        (b"A=\xff\n", "line 1 is not UTF-8"),
        (b"OK=1\nA=\x00\n", "line 2: a NUL byte"),
    ],
)
def test_env_file_refusals(tmp_path: Path, content: bytes, message: str) -> None:
    from imagegate._runspec import parse_env_file

    (tmp_path / "bad.env").write_bytes(content)
    with pytest.raises(RunOptionError) as caught:
        parse_env_file(tmp_path / "bad.env", environ={})
    assert message in str(caught.value) and caught.value.option == "--env-file"


def test_a_bad_env_flag_never_echoes_its_value() -> None:
    from imagegate._runspec import parse_env

    with pytest.raises(RunOptionError) as caught:
        parse_env(["BAD KEY=s3cr3t"], environ={})
    assert "s3cr3t" not in str(caught.value) and "whitespace" in str(caught.value)
    with pytest.raises(RunOptionError):
        parse_env(["=value"], environ={})


# -- plan + spec -> the Engine API's arguments -----------------------------------------------------------


def test_the_launch_is_the_pinned_digest_hardened_and_labelled(plan: LaunchPlan, tmp_path: Path) -> None:
    spec = RunSpec(command=("sh", "-c", "exit 3"), env={"TOKEN": "s3cr3t"}, binds=(Bind(str(tmp_path), "/data", True),),
                   labels={"team": "data"}, network="host", workdir="/data")
    launch = docker_launch(plan, spec, Policy(), launch_id="L1", task=REF)
    assert launch.create["image"] == plan.launch and "@sha256:" in plan.launch and ":1.4.2" not in plan.launch
    assert launch.create["command"] == ["sh", "-c", "exit 3"] and "entrypoint" not in launch.create and "user" not in launch.create
    assert launch.create["environment"] == ["TOKEN=s3cr3t"] and launch.create["working_dir"] == "/data"
    assert launch.create["labels"] == {
        "team": "data",
        "imagegate.dev/pinned": str(plan.pinned),
        "imagegate.dev/launch": "L1",
        "imagegate.dev/orchestrator": "cli",
        "imagegate.dev/task": REF,
        **imagegate.Launcher.current().labels(),  # who launched it: `imagegate gc` reads these
    }
    host = launch.host_config
    assert host["security_opt"] == ["no-new-privileges:true"] and host["cap_drop"] == ["ALL"] and "privileged" not in host
    assert host["network_mode"] == "host" and host["mounts"] == [{"Type": "bind", "Source": str(tmp_path), "Target": "/data", "ReadOnly": True}]
    as_engine_reports = {"SecurityOpt": host["security_opt"], "CapDrop": host["cap_drop"], "Privileged": False}
    assert docker_violations(as_engine_reports, Policy()) == []


def test_describe_lists_environment_names_never_values(plan: LaunchPlan) -> None:
    launch = docker_launch(plan, RunSpec(env={"TOKEN": "s3cr3t", "A": "1"}), Policy(), launch_id="L1")
    described = launch.describe()
    assert described["env"] == ["A", "TOKEN"] and "s3cr3t" not in json.dumps(described)
    assert described["host_config"] == dict(launch.host_config) and described["image"] == plan.launch


def test_entrypoint_is_one_executable_and_empty_clears_it(plan: LaunchPlan) -> None:
    assert docker_launch(plan, RunSpec(entrypoint="/bin/sh -x"), Policy(), launch_id="L").create["entrypoint"] == ["/bin/sh -x"]
    assert docker_launch(plan, RunSpec(entrypoint=""), Policy(), launch_id="L").create["entrypoint"] == [""]


def test_the_user_override_is_the_one_the_gate_checked(registry: FakeRegistry, plan: LaunchPlan) -> None:
    client = RegistryClient(transport=registry.transport, docker_config=DockerConfig({}))
    as_user = plan_launch(ImageSource(image=REF), user="10001:10001", client=client)
    assert docker_launch(as_user, RunSpec(user="10001:10001"), Policy(), launch_id="L").create["user"] == "10001:10001"
    for checked, spec in [(plan, RunSpec(user="0")), (as_user, RunSpec()), (as_user, RunSpec(user="10002"))]:
        with pytest.raises(RunOptionError) as caught:  # a spec cannot run as a user the gate never saw
            docker_launch(checked, spec, Policy(), launch_id="L")
        assert caught.value.option == "--user" and "the gate checked" in str(caught.value)


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        (RunSpec(privileged=True), "privileged=True"),
        (RunSpec(cap_add=("SYS_ADMIN",)), "cap_add SYS_ADMIN is refused"),
        (RunSpec(security_opt=("seccomp=unconfined",)), "removes the container's confinement"),
        (RunSpec(security_opt=("no-new-privileges=false",)), "allows privilege escalation"),
    ],
)
def test_weakening_options_are_refused(plan: LaunchPlan, spec: RunSpec, problem: str) -> None:
    with pytest.raises(HardeningError) as caught:
        docker_launch(plan, spec, Policy(), launch_id="L")
    assert any(problem in p for p in caught.value.problems)


def test_a_capability_the_policy_allows_is_added_back(plan: LaunchPlan) -> None:
    policy = Policy(allowed_capabilities=("NET_BIND_SERVICE",))
    host = docker_launch(plan, RunSpec(cap_add=("cap_net_bind_service",)), policy, launch_id="L").host_config
    assert host["cap_add"] == ["NET_BIND_SERVICE"] and host["cap_drop"] == ["ALL"]


@pytest.mark.parametrize(
    ("spec", "option", "message"),
    [
        (RunSpec(labels={"imagegate.dev/pinned": "x@sha256:0"}), "--label", "imagegate's own"),
        (RunSpec(labels={"": "x"}), "--label", "needs a key"),
        (RunSpec(workdir="work"), "--workdir", "absolute"),
        (RunSpec(name="-bad"), "--name", "a container name is"),
        (RunSpec(command=()), "command", "an empty command"),
        (RunSpec(stop_timeout=-1), "--stop-timeout", "0 or more"),
        (RunSpec(network=" "), "--network", "empty network"),
    ],
)
def test_options_docker_would_refuse_or_imagegate_cannot_honour(plan: LaunchPlan, spec: RunSpec, option: str, message: str) -> None:
    with pytest.raises(RunOptionError) as caught:
        docker_launch(plan, spec, Policy(), launch_id="L")
    assert caught.value.option == option and message in str(caught.value)
