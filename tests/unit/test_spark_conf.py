"""spark-submit's Kubernetes confs through the gate (fake registry): image confs pinned, templates read,
pinned, hardened and written anew; unknown image confs and unreadable templates refused."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from imagegate import CheckFailed, DockerConfig, HardeningError, RegistryClient, SparkSpecError, pin_spark_conf
from imagegate._spark import parse_option_string, properties_problems, read_properties
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



DELETE = "spark.kubernetes.executor.deleteOnTermination"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        # Spark's launcher drops quotes and backslashes: these are featureSteps to the driver JVM
        ("spark.driver.extraJavaOptions", "-Dspark.kubernetes.executor.pod.feature''Steps=com.example.Step"),
        ("spark.driver.defaultJavaOptions", "-Dspark.kubernetes.executor.pod.feature\\Steps=com.example.Step"),
        ("spark.executor.extraJavaOptions", "-Xmx1g -Dspark.kubernetes.executor.volumes.nfs.x.options.server=nfs.example"),
        ("spark.kubernetes.driverEnv.SPARK_SUBMIT_OPTS", '-D"spark.kubernetes.executor.deleteOnTermination"=true'),
        ("spark.kubernetes.driverEnv.JAVA_TOOL_OPTIONS", "-Dspark.kubernetes.executor.volumes.nfs.x.mount.path=/x"),
        ("spark.executorEnv.JDK_JAVA_OPTIONS", "@/etc/spark/more-java-options"),
        ("spark.driver.extraJavaOptions", "-XX:VMOptionsFile=/etc/spark/jvm.options"),
        ("spark.driver.extraJavaOptions", "-Dspark.app.name='unclosed"),
        # what the hook makes of env_vars={"SPARK_SUBMIT_OPTS": …} (airflow_plugin.spark._driver_env_confs)
        ("spark.kubernetes.driverEnv.SPARK_SUBMIT_OPTS", "-Dspark.kubernetes.driver.pod\\Template\\File=/t.yaml"),
        ("spark.kubernetes.executor.deleteOnTermination", "true"),
        ("spark.kubernetes.executor.deleteOnTermination", " TRUE"),
        ("spark.kubernetes.executor.pod.featureSteps=com.example.Step spark.x", "y"),  # --conf splits at the first =
    ],
)
def test_java_options_and_settings_the_gate_cannot_keep_are_refused(client: RegistryClient, registry: FakeRegistry,
                                                                    key: str, value: str) -> None:
    registry.reset_requests()
    with pytest.raises(SparkSpecError) as caught:
        pin_spark_conf({"spark.kubernetes.container.image": SPARK, key: value}, client=client)
    assert caught.value.option == f"conf[{key!r}]" and "Fix:" in str(caught.value), caught.value.problems
    assert registry.requests == []


def test_harmless_java_options_and_envs_pass(client: RegistryClient, tmp_path: Path) -> None:
    conf = {"spark.kubernetes.container.image": SPARK, "spark.driver.extraJavaOptions": "-Xss4m -Dapp.mode='a b'",
            "spark.kubernetes.driverEnv.SPARK_SUBMIT_OPTS": "-Dspark.ui.enabled=false",
            "spark.executorEnv.GREETING": "it's fine", DELETE: "false"}
    assert pin_spark_conf(conf, client=client, out_dir=tmp_path).plan.driver


def test_the_executors_are_kept_for_the_read_back(client: RegistryClient, tmp_path: Path) -> None:
    pinned = pin_spark_conf({"spark.kubernetes.container.image": SPARK}, client=client, out_dir=tmp_path)
    assert pinned.conf[DELETE] == "false" and f"{DELETE}=false" in pinned.args()


@pytest.mark.parametrize(
    ("text", "options"),  # what Spark's own parseOptionString returns (run on the JDK)
    [
        ("-Dspark.kubernetes.executor.pod.feature''Steps=X", ["-Dspark.kubernetes.executor.pod.featureSteps=X"]),
        ("-Dspark.kubernetes.executor.pod.feature\\Steps=X -Da=b",
         ["-Dspark.kubernetes.executor.pod.featureSteps=X", "-Da=b"]),
        ("-D'a b'=\"c 'd\" e\\ f", ["-Da b=c 'd", "e f"]),
        ("'-Dx=\\\\'  \"-Dy=\\\"\"", ["-Dx=\\\\", '-Dy="']),
        ("  \t", []),
    ],
)
def test_option_strings_are_split_as_sparks_launcher_splits_them(text: str, options: list[str]) -> None:
    assert parse_option_string(text) == options


@pytest.mark.parametrize("text", ["-Da='b", '-Da="b', "-Da=b\\"])
def test_an_option_string_spark_refuses_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="Invalid option string"):
        parse_option_string(text)


@pytest.mark.parametrize(
    ("text", "entries"),  # what java.util.Properties.load reads (run on the JDK)
    [
        ("spark.kubernetes.executor.pod.feature\\u0053teps=com.example.Step\n",
         {"spark.kubernetes.executor.pod.featureSteps": "com.example.Step"}),
        ("spark.kubernetes.driver.pod.feature\\\n    Steps=com.example.Step\n",
         {"spark.kubernetes.driver.pod.featureSteps": "com.example.Step"}),
        ("spark.kubernetes.executor.pod.feature\\Steps : com.example.Step\r\n",
         {"spark.kubernetes.executor.pod.featureSteps": "com.example.Step"}),
        ("  # spark.kubernetes.container.image=x\\\nspark.a  b\\\r\n\tc\n! comment\nkey\\ with\\:colon=v\\tw\n",
         {"key with:colon": "v\tw", "spark.a": "bc"}),
        ("\\\n#not a comment?\nk=v\\\n", {"k": "v"}),
        ("a=b\\\\\nc\n", {"a": "b\\", "c": ""}),
        ("spark.x=\\ud83d\\ude00\n", {"spark.x": "\U0001F600"}),
    ],
)
def test_properties_are_read_as_java_reads_them(text: str, entries: dict[str, str]) -> None:
    assert dict(read_properties(text)) == entries


@pytest.mark.parametrize(
    "text",
    [
        "spark.kubernetes.executor.pod.feature\\u0053teps=com.example.Step\n",
        "spark.kubernetes.driver.pod.feature\\\n    Steps=com.example.Step\n",
        "spark.kubernetes.executor.pod.feature\\Steps=com.example.Step\n",
        "spark.kubernetes.executor.container.im\\u0061ge=registry.test/evil:latest\n",
        "spark.kubernetes.driver.volumes.hostPath.root.mount.path=/host\n",
        "spark.kubernetes.executor.deleteOnTermination true\n",
        "spark.kubernetes.executor.label.imagegate.dev/launch=other\n",
        "spark.driver.extraJavaOptions=-Dspark.kubernetes.executor.pod.feature''Steps=X\n",
        "spark.app.name=\\u00zz\n",  # Java refuses it: so does the gate
    ],
)
def test_a_properties_file_is_checked_as_spark_reads_it(text: str) -> None:
    problems = properties_problems(text, where="spark-defaults.conf")
    assert problems and all(where == "spark-defaults.conf" and "Fix:" in why for where, why in problems), problems


def test_a_properties_file_too_large_to_read_whole_is_refused(client: RegistryClient, tmp_path: Path) -> None:
    big = tmp_path / "spark-defaults.conf"
    big.write_text("# padding\n" * 500_000 + "spark.kubernetes.executor.pod.featureSteps=com.example.Step\n")
    with pytest.raises(SparkSpecError, match="larger than"):
        pin_spark_conf({"spark.kubernetes.container.image": SPARK}, client=client, properties_files=[big],
                       out_dir=tmp_path / "out")


def test_a_gate_label_in_a_conf_is_refused_as_such(client: RegistryClient) -> None:
    key = "spark.kubernetes.executor.label.imagegate.dev/launch"
    with pytest.raises(SparkSpecError, match="imagegate.dev/ are the gate's own"):
        pin_spark_conf({"spark.kubernetes.container.image": SPARK, key: "other"}, client=client)


@pytest.mark.parametrize(
    ("template", "where"),
    [
        ({"metadata": {"labels": {"imagegate.dev/launch": "other"}}}, ".metadata.labels['imagegate.dev/launch']"),
        ({"metadata": {"annotations": {"imagegate.dev/images": "{}"}}}, ".metadata.annotations['imagegate.dev/images']"),
        ({"spec": {"containers": [{"name": "spark-kubernetes-executor", "envFrom": [{"configMapRef": {"name": "c"}}]}]}},
         ".spec.containers[0].envFrom[0]"),
        ({"spec": {"containers": [{"name": "spark-kubernetes-executor", "env": [
            {"name": "JAVA_TOOL_OPTIONS", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}]}]}},
         ".spec.containers[0].env[0].valueFrom"),
        ({"spec": {"containers": [{"name": "spark-kubernetes-executor", "env": [
            {"name": "_JAVA_OPTIONS", "value": "-Dspark.kubernetes.executor.pod.feature\\Steps=X"}]}]}},
         ".spec.containers[0].env[0].value"),
    ],
)
def test_a_template_file_that_relabels_or_injects_options_is_refused(client: RegistryClient, tmp_path: Path,
                                                                    template: dict[str, Any], where: str) -> None:
    path = tmp_path / "t.json"
    path.write_text(json.dumps(template))
    with pytest.raises(SparkSpecError) as caught:
        pin_spark_conf({"spark.kubernetes.container.image": SPARK, "spark.kubernetes.executor.podTemplateFile": str(path)},
                       client=client, out_dir=tmp_path / "out")
    assert caught.value.option == f"spark.kubernetes.executor.podTemplateFile{where}", caught.value.problems


def test_an_env_from_with_a_safe_prefix_passes(client: RegistryClient, tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"spec": {"containers": [{"name": "spark-kubernetes-executor", "envFrom": [
        {"prefix": "APP_", "configMapRef": {"name": "c"}}]}]}}))
    assert pin_spark_conf({"spark.kubernetes.container.image": SPARK, "spark.kubernetes.executor.podTemplateFile": str(path)},
                          client=client, out_dir=tmp_path / "out").plan.executor


@pytest.mark.parametrize("harden", [True, False])
def test_an_image_volume_in_a_template_is_refused_hardened_or_not(client: RegistryClient, tmp_path: Path,
                                                                 harden: bool) -> None:
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"spec": {"volumes": [{"name": "jars", "image": {"reference": f"{HOST}/evil:latest"}}]}}))
    with pytest.raises(SparkSpecError) as caught:
        pin_spark_conf({"spark.kubernetes.container.image": SPARK, "spark.kubernetes.executor.podTemplateFile": str(path)},
                       client=client, harden=harden, out_dir=tmp_path / "out")
    assert caught.value.option == "spark.kubernetes.executor.podTemplateFile.spec.volumes[0].image"
    assert not (tmp_path / "out").exists()


def test_an_unquoted_yaml_date_stays_a_string(client: RegistryClient, tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("metadata:\n  annotations:\n    released: 2001-12-14\nspec: {}\n")
    pinned = pin_spark_conf({"spark.kubernetes.container.image": SPARK, "spark.kubernetes.executor.podTemplateFile": str(path)},
                            client=client, out_dir=tmp_path / "out")
    assert json.loads(pinned.files["executor"].read_text())["metadata"]["annotations"]["released"] == "2001-12-14"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("metadata:\n  labels:\n    x: !!binary aGVsbG8=\nspec: {}\n", "binary"),
        ("metadata:\n  annotations:\n    x: !!set {a: null}\nspec: {}\n", "set"),
        ("metadata:\n  annotations:\n    x: !!timestamp 2001-12-14\nspec: {}\n", "timestamp"),
        ("metadata:\n  annotations:\n    x: !!omap [{a: 1}]\nspec: {}\n", "omap"),
        ("spec:\n  nodeSelector:\n    1: a\n", "not a string"),
        ("spec:\n  containers:\n    - name: a\n      args: [.nan]\n", "no JSON form"),
        ('{"spec": {"containers": [{"name": "a", "args": [NaN]}]}}', "not a JSON number"),
        ("spec:\n  containers:\n  - name: spark-kubernetes-executor\n    securityContext: x\n", "must be a mapping"),
        ("spec:\n  securityContext: [x]\n", "must be a mapping"),
        ("spec:\n  containers:\n  - name: a\n    securityContext: {capabilities: {drop: ALL}}\n", "must be a list"),
        ("spec:\n  volumes: x\n", "list of mappings"),
    ],
)
def test_a_template_json_cannot_hold_is_refused_not_a_crash(client: RegistryClient, tmp_path: Path, text: str,
                                                            match: str) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(text)
    with pytest.raises(SparkSpecError, match=match):
        pin_spark_conf({"spark.kubernetes.container.image": SPARK, "spark.kubernetes.executor.podTemplateFile": str(path)},
                       client=client, out_dir=tmp_path / "out")


def test_annotation_confs_and_properties_that_unconfine_the_pods_are_refused(client: RegistryClient, tmp_path: Path) -> None:
    apparmor = "spark.kubernetes.executor.annotation.container.apparmor.security.beta.kubernetes.io/spark-kubernetes-executor"
    with pytest.raises(HardeningError, match="unconfined"):
        pin_spark_conf({"spark.kubernetes.container.image": SPARK, apparmor: "unconfined"}, client=client,
                       out_dir=tmp_path / "a")
    props = tmp_path / "spark.properties"
    props.write_text(f"{apparmor}=unconfined\n")
    with pytest.raises(HardeningError, match="spark.properties"):
        pin_spark_conf({"spark.kubernetes.container.image": SPARK}, client=client, out_dir=tmp_path / "b",
                       properties_files=[props])
    pin_spark_conf({"spark.kubernetes.container.image": SPARK, apparmor: "runtime/default"}, client=client,
                   out_dir=tmp_path / "c")
    with pytest.raises(SparkSpecError, match="SPARK_CONF_DIR"):
        pin_spark_conf({"spark.kubernetes.container.image": SPARK, "spark.kubernetes.driverEnv.SPARK_CONF_DIR": "/x"},
                       client=client, out_dir=tmp_path / "d")
