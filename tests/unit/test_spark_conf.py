"""spark-submit's Kubernetes confs through the gate (fake registry): image confs pinned, templates read,
pinned, hardened and written anew; unknown image confs and unreadable templates refused."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from imagegate import CheckFailed, DockerConfig, HardeningError, RegistryClient, SparkSpecError, pin_spark_conf
from imagegate._spark import properties_problems
from tests.support.fakeregistry import FakeRegistry
from tests.support.oci import make_image

HOST = "registry.test"
SPARK = f"{HOST}/data/spark:4.3.0"
DIGEST_REF = re.compile(r"[^@\s]+@sha256:[0-9a-f]{64}")


@pytest.fixture
def registry() -> FakeRegistry:
    reg = FakeRegistry()
    reg.put_image("data/spark", make_image(user="185:185"), tag="4.3.0")
    reg.put_image("data/spark", make_image(user="185:185", cmd=["other"]), tag="latest")
    reg.put_image("data/spark-root", make_image(user="root"), tag="4.3.0")
    reg.put_image("tools/log", make_image(user="2000"), tag="1.0.0")
    return reg


@pytest.fixture
def client(registry: FakeRegistry) -> RegistryClient:
    return RegistryClient(transport=registry.transport, docker_config=DockerConfig({}))


def test_the_image_confs_are_pinned_and_both_roles_written_explicitly(client: RegistryClient, registry: FakeRegistry,
                                                                      tmp_path: Path) -> None:
    pinned = pin_spark_conf({"spark.kubernetes.container.image": SPARK, "spark.executor.instances": "2"},
                            client=client, out_dir=tmp_path)
    launch = f"{HOST}/data/spark@{registry.repositories['data/spark'].tags['4.3.0']}"
    conf = pinned.conf
    assert conf["spark.kubernetes.container.image"] == launch
    assert conf["spark.kubernetes.driver.container.image"] == conf["spark.kubernetes.executor.container.image"] == launch
    assert conf["spark.executor.instances"] == "2"
    assert conf["spark.kubernetes.driver.podTemplateContainerName"] == "spark-kubernetes-driver"
    assert conf["spark.kubernetes.executor.podTemplateContainerName"] == "spark-kubernetes-executor"
    assert all(DIGEST_REF.fullmatch(v) for k, v in conf.items() if k.endswith("container.image"))
    assert pinned.args()[:2] == ["--conf", f"spark.kubernetes.container.image={launch}"]
    for role in ("driver", "executor"):
        path = pinned.files[role]
        assert path.parent == tmp_path and conf[f"spark.kubernetes.{role}.podTemplateFile"] == str(path)
        template = json.loads(path.read_text())
        assert template["kind"] == "Pod"
        assert template["spec"]["securityContext"] == {"runAsNonRoot": True, "runAsUser": 185, "runAsGroup": 185,
                                                       "seccompProfile": {"type": "RuntimeDefault"}}
        (main,) = template["spec"]["containers"]
        assert main["image"] == launch
        assert main["securityContext"]["allowPrivilegeEscalation"] is False
        assert main["securityContext"]["capabilities"] == {"drop": ["ALL"]}


def test_a_given_template_is_read_pinned_and_hardened_and_the_original_kept(client: RegistryClient, tmp_path: Path) -> None:
    source = tmp_path / "executor.yaml"
    source.write_text(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  labels: {team: data}\nspec:\n  containers:\n"
        "    - name: main\n      securityContext: {readOnlyRootFilesystem: true}\n"
        f"    - name: log\n      image: {HOST}/tools/log:1.0.0\n"
    )
    before = source.read_text()
    pinned = pin_spark_conf({"spark.kubernetes.container.image": SPARK,
                             "spark.kubernetes.executor.podTemplateFile": str(source)},
                            client=client, out_dir=tmp_path / "out")
    assert source.read_text() == before  # nothing a user wrote is overwritten
    template = json.loads(pinned.files["executor"].read_text())
    assert pinned.conf["spark.kubernetes.executor.podTemplateContainerName"] == "main"  # Spark's rule: the first one
    main, log = template["spec"]["containers"]
    assert main["securityContext"]["readOnlyRootFilesystem"] is True and main["image"] == pinned.plan.executor.launch
    assert DIGEST_REF.fullmatch(log["image"]) and log["securityContext"]["allowPrivilegeEscalation"] is False
    assert template["metadata"]["labels"]["team"] == "data"
    assert set(pinned.plan.images["executor"]) >= {"main", "log", "spark-kubernetes-executor"}


@pytest.mark.parametrize(
    ("conf", "role", "check"),
    [
        ({"spark.kubernetes.container.image": f"{HOST}/data/spark:latest"}, "spark.kubernetes.container.image", "pinned"),
        ({"spark.kubernetes.container.image": SPARK,
          "spark.kubernetes.executor.container.image": f"{HOST}/data/spark-root:4.3.0"},
         "spark.kubernetes.executor.container.image", "non-root"),
    ],
)
def test_a_refused_image_returns_nothing(client: RegistryClient, tmp_path: Path, conf: dict[str, str], role: str,
                                         check: str) -> None:
    with pytest.raises(CheckFailed) as caught:
        pin_spark_conf(conf, client=client, out_dir=tmp_path / "out")
    assert caught.value.role == role and check in [r.check for r in caught.value.report.failures]
    assert not (tmp_path / "out").exists()  # no template was written


@pytest.mark.parametrize(
    "conf",
    [
        {"spark.kubernetes.executor.container.imageName": SPARK},
        {"spark.kubernetes.Executor.container.image": SPARK},
        {"spark.kubernetes.executor.pod.featureSteps": "com.example.Step"},
        {"spark.kubernetes.driver.volumes.hostPath.x.mount.path": "/x"},
        {"spark.kubernetes.driver.volumes.nfs.x.options.server": "nfs.example.com"},
        {"spark.executor.extraJavaOptions": "-Dspark.kubernetes.executor.podTemplateFile=/tmp/t.yaml"},
    ],
)
def test_a_conf_the_gate_cannot_read_is_refused(client: RegistryClient, registry: FakeRegistry, conf: dict[str, str]) -> None:
    registry.reset_requests()
    with pytest.raises(SparkSpecError) as caught:
        pin_spark_conf({"spark.kubernetes.container.image": SPARK, **conf}, client=client)
    assert caught.value.option == f"conf[{next(iter(conf))!r}]" and "Fix:" in str(caught.value)
    assert registry.requests == []


def test_no_image_at_all_is_refused(client: RegistryClient) -> None:
    with pytest.raises(SparkSpecError, match="no image"):
        pin_spark_conf({"spark.kubernetes.driver.container.image": SPARK}, client=client)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('{"spec": {"containers": [{"name": "a"}]}, "spec": {}}', "twice"),
        ("spec:\n  hostNetwork: true\n  hostNetwork: false\n", "twice"),
        ("- just\n- a list\n", "not a mapping"),
        ("kind: Deployment\nspec: {}\n", "Deployment"),
        ("spec:\n  containers:\n    - name: a\n      env: [{name: JDK_JAVA_OPTIONS, value: -Dspark.kubernetes.executor.container.image=x}]\n",
         "cannot read"),
        ("spec: [unclosed\n", "neither JSON nor YAML"),
        # "billion laughs": 1 KiB that an alias-expanding reader turns into gigabytes (the walker, the pinned file)
        ("a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
         "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nspec:\n  containers:\n    - name: a\n      args: *c\n",
         "YAML alias"),
        ("base: &env {name: A, value: b}\nspec:\n  containers:\n    - name: a\n      env: [*env]\n", "YAML alias"),
        ("[" * 5000 + "]" * 5000, "nests deeper"),  # JSON nesting past Python's stack
        ("spec:\n  containers:\n    - name: a\n      args: " + "[" * 150 + "]" * 150 + "\n", "more than 100 levels"),
    ],
)
def test_an_unreadable_template_is_refused(client: RegistryClient, tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(text)
    with pytest.raises(SparkSpecError, match=match):
        pin_spark_conf({"spark.kubernetes.container.image": SPARK, "spark.kubernetes.driver.podTemplateFile": str(path)},
                       client=client, out_dir=tmp_path / "out")


def test_a_missing_or_huge_template_is_refused(client: RegistryClient, tmp_path: Path) -> None:
    conf = {"spark.kubernetes.container.image": SPARK, "spark.kubernetes.driver.podTemplateFile": str(tmp_path / "none")}
    with pytest.raises(SparkSpecError, match="cannot read"):
        pin_spark_conf(conf, client=client)
    (tmp_path / "big.json").write_text("{" + " " * (1 << 20) + "}")
    conf["spark.kubernetes.driver.podTemplateFile"] = str(tmp_path / "big.json")
    with pytest.raises(SparkSpecError, match="larger than"):
        pin_spark_conf(conf, client=client)


@pytest.mark.parametrize(
    ("template", "match"),
    [
        ({"spec": {"hostNetwork": True}}, "hostNetwork"),
        ({"spec": {"volumes": [{"name": "h", "hostPath": {"path": "/"}}]}}, "hostPath"),
        ({"spec": {"containers": [{"name": "spark-kubernetes-driver", "securityContext": {"privileged": True}}]}},
         "privileged"),
    ],
)
def test_a_template_that_breaks_the_profile_is_refused(client: RegistryClient, tmp_path: Path, template: dict[str, Any],
                                                       match: str) -> None:
    path = tmp_path / "t.json"
    path.write_text(json.dumps(template))
    with pytest.raises(HardeningError, match=match):
        pin_spark_conf({"spark.kubernetes.container.image": SPARK, "spark.kubernetes.driver.podTemplateFile": str(path)},
                       client=client, out_dir=tmp_path / "out")


def test_properties_files_that_set_image_or_template_confs_are_refused() -> None:
    assert properties_problems("spark.executor.instances 2\nspark.ui.enabled=false\n", where="f") == []
    for text in ("spark.kubernetes.container.image repo:1", "spark.kubernetes.executor.container.image=x",
                 "spark.kubernetes.driver.podTemplateFile : /t", "spark.driver.extraJavaOptions -Dspark.kubernetes.x.image=y"):
        assert properties_problems(text, where="f"), text


def test_a_properties_file_that_sets_an_image_refuses_the_conf(client: RegistryClient, registry: FakeRegistry,
                                                               tmp_path: Path) -> None:
    harmless, sneaky = tmp_path / "ok.conf", tmp_path / "spark-defaults.conf"
    harmless.write_text("spark.executor.instances 2\n")
    sneaky.write_text("spark.kubernetes.executor.container.image  registry.test/data/spark:latest\n")
    assert pin_spark_conf({"spark.kubernetes.container.image": SPARK}, client=client, properties_files=[harmless],
                          out_dir=tmp_path / "out").plan.driver
    registry.reset_requests()
    with pytest.raises(SparkSpecError) as caught:
        pin_spark_conf({"spark.kubernetes.container.image": SPARK}, client=client, properties_files=[harmless, sneaky])
    assert caught.value.option == str(sneaky) and registry.requests == []
