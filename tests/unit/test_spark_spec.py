"""A kubeflow SparkApplication through the gate, against the in-process fake registry: every image field the
CRD has is found and pinned, an unknown one refused, the restricted context applied, the pods verified."""

from __future__ import annotations

import copy
import json
import re
from typing import Any, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imagegate import (
    CheckFailed,
    DockerConfig,
    HardeningError,
    LaunchMismatch,
    RegistryClient,
    SparkSpecError,
    plan_spark_application,
)
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
    reg.put_image("data/spark-root", make_image(user="0"), tag="4.3.0")
    reg.put_image("data/spark-named", make_image(user="spark"), tag="4.3.0")
    reg.put_image("tools/log", make_image(user="2000"), tag="1.0.0")
    reg.put_image("tools/log", make_image(user="2000", cmd=["new"]), tag="latest")
    reg.put_image("tools/init", make_image(user="3000:3000"), tag="1.0.0")
    reg.put_image("tools/tmpl", make_image(user="4000"), tag="1.0.0")
    return reg


@pytest.fixture
def client(registry: FakeRegistry) -> RegistryClient:
    return RegistryClient(transport=registry.transport, docker_config=DockerConfig({}))


def application(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "type": "Python", "mode": "cluster", "sparkVersion": "4.3.0", "image": SPARK,
        "mainApplicationFile": "local:///opt/spark/work-dir/wordcount.py",
        "driver": {"cores": 1, "memory": "512m"}, "executor": {"instances": 2, "cores": 1, "memory": "512m"},
    }
    base.update(spec)
    base = {key: value for key, value in base.items() if value is not None}
    return {"apiVersion": "sparkoperator.k8s.io/v1beta2", "kind": "SparkApplication",
            "metadata": {"name": "wordcount"}, "spec": base}


def full_application() -> dict[str, Any]:
    """Every image field the v1beta2 CRD has, each with a tag."""
    return application(
        sparkConf={"spark.kubernetes.container.image": SPARK, "spark.kubernetes.executor.container.image": SPARK,
                   "spark.kubernetes.container.image.pullPolicy": "IfNotPresent"},
        driver={"image": SPARK, "sidecars": [{"name": "log", "image": f"{HOST}/tools/log:1.0.0"}],
                "initContainers": [{"name": "init", "image": f"{HOST}/tools/init:1.0.0"}],
                "template": {"spec": {"containers": [{"name": "spark-kubernetes-driver"},
                                                     {"name": "tmpl", "image": f"{HOST}/tools/tmpl:1.0.0"}],
                                      "initContainers": [{"name": "tmpl-init", "image": f"{HOST}/tools/init:1.0.0"}]}}},
        executor={"image": SPARK, "instances": 2, "sidecars": [{"name": "log", "image": f"{HOST}/tools/log:1.0.0"}],
                  "initContainers": [{"name": "init", "image": f"{HOST}/tools/init:1.0.0"}],
                  "template": {"metadata": {"labels": {"team": "data"}},
                               "spec": {"containers": [{"name": "tmpl", "image": f"{HOST}/tools/tmpl:1.0.0"}]}}},
    )


def image_fields(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Independent of the module's own walk: every value whose key says it is an image, and every image conf."""
    if isinstance(value, dict):
        for key, child in value.items():
            here = f"{path}.{key}"
            if key in ("labels", "annotations"):
                continue
            if (key == "image" or key.endswith("container.image")) and not isinstance(child, (dict, list)):
                yield here, child
            yield from image_fields(child, here)
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from image_fields(child, f"{path}[{index}]")


def digest(registry: FakeRegistry, repo: str, tag: str) -> str:
    return registry.repositories[repo].tags[tag]


def test_every_image_field_is_found_pinned_and_checked(client: RegistryClient, registry: FakeRegistry) -> None:
    given = full_application()
    planned = plan_spark_application(given, client=client)
    out = planned.application
    found = dict(image_fields(out))
    assert len(found) == 14, found  # spec.image, 2 confs, 2×(image, sidecar, init), driver template 3 + executor 2
    assert all(isinstance(v, str) and DIGEST_REF.fullmatch(v) for v in found.values()), found
    spark = f"{HOST}/data/spark@{digest(registry, 'data/spark', '4.3.0')}"
    assert out["spec"]["image"] == out["spec"]["driver"]["image"] == out["spec"]["executor"]["image"] == spark
    assert out["spec"]["driver"]["sidecars"][0]["image"] == f"{HOST}/tools/log@{digest(registry, 'tools/log', '1.0.0')}"
    assert out["spec"]["executor"]["initContainers"][0]["image"] == f"{HOST}/tools/init@{digest(registry, 'tools/init', '1.0.0')}"
    assert out["spec"]["sparkConf"]["spark.kubernetes.container.image.pullPolicy"] == "IfNotPresent"  # not an image
    assert set(planned.images["driver"]) == {"spark-kubernetes-driver", "log", "init", "tmpl", "tmpl-init"}
    assert set(planned.images["executor"]) == {"spark-kubernetes-executor", "log", "init", "tmpl"}
    assert planned.driver.launch == planned.executor.launch == spark
    assert "spec.driver.template.spec.containers[tmpl].image" in planned.plans
    assert given == full_application()  # the input is not touched


def test_the_effective_images_are_written_explicitly_and_into_the_templates(client: RegistryClient, registry: FakeRegistry) -> None:
    planned = plan_spark_application(application(image=None, sparkConf={"spark.kubernetes.container.image": SPARK}),
                                     client=client)
    spec = planned.application["spec"]
    spark = f"{HOST}/data/spark@{digest(registry, 'data/spark', '4.3.0')}"
    assert "image" not in spec or spec["image"] is None
    assert spec["driver"]["image"] == spec["executor"]["image"] == spark
    driver = spec["driver"]["template"]["spec"]["containers"][0]
    executor = spec["executor"]["template"]["spec"]["containers"][0]
    assert (driver["name"], driver["image"]) == ("spark-kubernetes-driver", spark)
    assert (executor["name"], executor["image"]) == ("spark-kubernetes-executor", spark)
    assert list(planned.plans) == ["spec.sparkConf['spark.kubernetes.container.image']"]


def test_the_restricted_context_is_applied_to_driver_and_executor(client: RegistryClient) -> None:
    spec = plan_spark_application(full_application(), client=client).application["spec"]
    for role in ("driver", "executor"):
        section = spec[role]
        assert section["podSecurityContext"] == {"runAsNonRoot": True, "runAsUser": 185, "runAsGroup": 185,
                                                 "seccompProfile": {"type": "RuntimeDefault"}}
        assert section["securityContext"]["allowPrivilegeEscalation"] is False
        assert section["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        assert section["securityContext"]["runAsNonRoot"] is True
        template = section["template"]["spec"]
        assert template["securityContext"] == section["podSecurityContext"]
        for container in [*template["containers"], *template.get("initContainers", []), *section["sidecars"],
                          *section["initContainers"]]:
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, container
            assert container["securityContext"]["capabilities"]["drop"] == ["ALL"], container


def test_a_user_security_context_that_satisfies_the_profile_is_kept(client: RegistryClient) -> None:
    given = application(driver={"securityContext": {"runAsUser": 1234, "readOnlyRootFilesystem": True},
                                "podSecurityContext": {"fsGroup": 185}})
    planned = plan_spark_application(given, client=client)
    driver = planned.application["spec"]["driver"]
    assert driver["securityContext"]["runAsUser"] == 1234 and driver["securityContext"]["readOnlyRootFilesystem"] is True
    assert driver["podSecurityContext"]["fsGroup"] == 185
    assert planned.driver.user == "1234"  # the image was checked as the user it runs as


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"driver": {"hostNetwork": True}}, "hostNetwork"),
        ({"executor": {"securityContext": {"privileged": True}}}, "privileged"),
        ({"executor": {"securityContext": {"allowPrivilegeEscalation": True}}}, "allowPrivilegeEscalation"),
        ({"volumes": [{"name": "host", "hostPath": {"path": "/etc"}}]}, "hostPath"),
        ({"executor": {"template": {"spec": {"hostPID": True}}}}, "hostPID"),
        ({"driver": {"template": {"spec": {"containers": [{"name": "x", "image": f"{HOST}/tools/log:1.0.0",
                                                           "securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}]}}}},
         "capabilities"),
    ],
)
def test_what_the_restricted_profile_forbids_is_refused(client: RegistryClient, change: dict[str, Any], match: str) -> None:
    with pytest.raises(HardeningError, match=match) as caught:
        plan_spark_application(application(**change), client=client)
    assert caught.value.runtime == "kubernetes" and caught.value.container is None
    assert plan_spark_application(application(**change), client=client, harden=False).application  # harden=False: as given


@pytest.mark.parametrize(
    ("change", "field", "check"),
    [
        ({"executor": {"image": f"{HOST}/data/spark:latest"}}, "spec.executor.image", "pinned"),
        ({"executor": {"image": f"{HOST}/data/spark-root:4.3.0"}}, "spec.executor.image", "non-root"),
        ({"executor": {"image": f"{HOST}/data/spark-named:4.3.0"}}, "spec.executor.image", "non-root"),
        ({"driver": {"sidecars": [{"name": "s", "image": f"{HOST}/tools/log:latest"}]}},
         "spec.driver.sidecars[s].image", "pinned"),
        ({"executor": {"template": {"spec": {"initContainers": [{"name": "i", "image": f"{HOST}/data/spark:latest"}]}}}},
         "spec.executor.template.spec.initContainers[i].image", "pinned"),
        ({"sparkConf": {"spark.kubernetes.executor.container.image": f"{HOST}/data/spark:latest"}},
         "spec.sparkConf['spark.kubernetes.executor.container.image']", "pinned"),
    ],
)
def test_a_refused_image_refuses_the_application_and_names_its_field(
    client: RegistryClient, change: dict[str, Any], field: str, check: str
) -> None:
    with pytest.raises(CheckFailed) as caught:
        plan_spark_application(application(**change), client=client)
    assert caught.value.role == field
    assert check in [r.check for r in caught.value.report.failures]


@pytest.mark.parametrize("role", ["driver", "executor"])
@pytest.mark.parametrize("context", ["securityContext", "podSecurityContext"])
def test_a_root_user_given_for_a_role_is_refused_even_for_a_good_image(client: RegistryClient, role: str, context: str) -> None:
    with pytest.raises(CheckFailed) as caught:
        plan_spark_application(application(**{role: {context: {"runAsUser": 0}}}), client=client)
    assert caught.value.report.user == "0" and [r.check for r in caught.value.report.failures] == ["non-root"]


def test_a_root_sidecar_image_runs_as_the_pods_user(client: RegistryClient) -> None:
    """As for any pod (plan_pod): the pod's runAsUser (the Spark image's uid) is the user a sidecar runs as."""
    given = application(driver={"sidecars": [{"name": "s", "image": f"{HOST}/data/spark-root:4.3.0"}]})
    planned = plan_spark_application(given, client=client)
    assert planned.images["driver"]["s"].user == "185"
    assert planned.application["spec"]["driver"]["podSecurityContext"]["runAsUser"] == 185


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"volumes": [{"name": "v", "image": {"reference": SPARK}}]}, "spec.volumes[0].image"),
        ({"driver": {"mysteryImage": SPARK}}, "spec.driver.mysteryImage"),
        ({"executor": {"template": {"spec": {"containers": [{"name": "x", "image": SPARK, "debugImage": SPARK}]}}}},
         "spec.executor.template.spec.containers[0].debugImage"),
        ({"sparkConf": {"spark.kubernetes.executor.container.imageOverride": SPARK}},
         "spec.sparkConf['spark.kubernetes.executor.container.imageOverride']"),
        ({"sparkConf": {"spark.kubernetes.Container.image": SPARK}}, "spec.sparkConf['spark.kubernetes.Container.image']"),
        ({"sparkConf": {"spark.kubernetes.executor.podTemplateFile": "/tmp/t.yaml"}},
         "spec.sparkConf['spark.kubernetes.executor.podTemplateFile']"),
        ({"sparkConf": {"spark.kubernetes.executor.pod.featureSteps": "com.example.Step"}},
         "spec.sparkConf['spark.kubernetes.executor.pod.featureSteps']"),
        ({"sparkConf": {"spark.kubernetes.executor.volumes.hostPath.data.mount.path": "/data"}},
         "spec.sparkConf['spark.kubernetes.executor.volumes.hostPath.data.mount.path']"),
        ({"sparkConf": {"spark.driver.extraJavaOptions": "-Dspark.kubernetes.executor.container.image=evil:1"}},
         "spec.sparkConf['spark.driver.extraJavaOptions']"),
        ({"driver": {"javaOptions": "-Dspark.kubernetes.executor.container.image=evil:1"}}, "spec.driver.javaOptions"),
        ({"driver": {"env": [{"name": "JAVA_TOOL_OPTIONS", "value": "-Dspark.kubernetes.executor.container.image=e"}]}},
         "spec.driver.env[0].value"),
        ({"executor": {"template": {"spec": {"containers": [{"name": "spark-kubernetes-executor", "env": [
            {"name": "JAVA_TOOL_OPTIONS", "value": "-Dspark.kubernetes.executor.podTemplateFile=/x"}]}]}}}},
         "spec.executor.template.spec.containers[0].env[0].value"),
        ({"sparkConfigMap": "my-spark-conf"}, "spec.sparkConfigMap"),
        # -D options as Spark's launcher reads them (quotes and backslashes removed), and hostPath/nfs volumes
        ({"driver": {"javaOptions": "-Dspark.kubernetes.executor.pod.feature''Steps=com.example.Step"}},
         "spec.driver.javaOptions"),
        ({"driver": {"javaOptions": "-Dspark.kubernetes.executor.volumes.hostPath.root.options.path=/"}},
         "spec.driver.javaOptions"),
        ({"executor": {"javaOptions": "-Dspark.kubernetes.executor.deleteOnTermination=true"}}, "spec.executor.javaOptions"),
        ({"driver": {"envVars": {"SPARK_SUBMIT_OPTS": "-Dspark.kubernetes.executor.pod.feature\\Steps=X"}}},
         "spec.driver.envVars['SPARK_SUBMIT_OPTS']"),
        ({"driver": {"envVars": {"JAVA_TOOL_OPTIONS": "-Dspark.kubernetes.driver.volumes.nfs.x.options.server=h"}}},
         "spec.driver.envVars['JAVA_TOOL_OPTIONS']"),
        ({"driver": {"envVars": {"JAVA_TOOL_OPTIONS=-Dspark.a": "b"}}}, "spec.driver.envVars['JAVA_TOOL_OPTIONS=-Dspark.a']"),
        ({"driver": {"env": [{"name": "JDK_JAVA_OPTIONS", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}},
         "spec.driver.env[0].valueFrom"),
        ({"driver": {"envFrom": [{"configMapRef": {"name": "opts"}}]}}, "spec.driver.envFrom[0]"),
        ({"executor": {"envFrom": [{"prefix": "JAVA_", "secretRef": {"name": "opts"}}]}}, "spec.executor.envFrom[0]"),
        ({"driver": {"envSecretKeyRefs": {"SPARK_SUBMIT_OPTS": {"name": "s", "key": "k"}}}},
         "spec.driver.envSecretKeyRefs['SPARK_SUBMIT_OPTS']"),
        ({"driver": {"template": {"spec": {"containers": [{"name": "spark-kubernetes-driver", "env": [
            {"name": "_JAVA_OPTIONS", "value": "-D'spark.kubernetes.executor.deleteOnTermination=true'"}]}]}}}},
         "spec.driver.template.spec.containers[0].env[0].value"),
        # the gate's labels: a user's would be laid over them and hide the pods from the read-back
        ({"executor": {"labels": {"imagegate.dev/launch": "other"}}}, "spec.executor.labels['imagegate.dev/launch']"),
        ({"driver": {"annotations": {"imagegate.dev/images": "{}"}}}, "spec.driver.annotations['imagegate.dev/images']"),
        ({"executor": {"template": {"metadata": {"labels": {"imagegate.dev/launch": "x"}}}}},
         "spec.executor.template.metadata.labels['imagegate.dev/launch']"),
        # executors that vanish before the read-back
        ({"executor": {"instances": 2, "deleteOnTermination": True}}, "spec.executor.deleteOnTermination"),
        ({"sparkConf": {"spark.kubernetes.executor.deleteOnTermination": "true"}},
         "spec.sparkConf['spark.kubernetes.executor.deleteOnTermination']"),
        # a field the gate reads into that is not an object
        ({"driver": {"template": {"spec": {"containers": [{"name": "spark-kubernetes-driver", "securityContext": "x"}]}}}},
         "spec.driver.template.spec.containers[0].securityContext"),
        ({"executor": {"template": {"spec": {"securityContext": {"seccompProfile": "RuntimeDefault"}}}}},
         "spec.executor.template.spec.securityContext.seccompProfile"),
    ],
)
def test_what_the_gate_cannot_read_is_refused_before_any_registry_request(
    client: RegistryClient, registry: FakeRegistry, change: dict[str, Any], where: str
) -> None:
    registry.reset_requests()
    with pytest.raises(SparkSpecError) as caught:
        plan_spark_application(application(**change), client=client)
    assert caught.value.option == where, caught.value.problems
    assert "Fix:" in str(caught.value)
    assert registry.requests == []


def test_a_role_without_an_image_is_refused(client: RegistryClient) -> None:
    with pytest.raises(SparkSpecError, match="no image") as caught:
        plan_spark_application(application(image=None, driver={"image": SPARK}), client=client)
    assert caught.value.option == "spec.executor.image"


def test_a_template_naming_another_spark_image_is_refused(client: RegistryClient) -> None:
    tmpl = {"spec": {"containers": [{"name": "spark-kubernetes-executor", "image": f"{HOST}/tools/log:1.0.0"}]}}
    with pytest.raises(SparkSpecError, match="remove the image from the template"):
        plan_spark_application(application(executor={"template": tmpl}), client=client)


def test_pods_are_labelled_and_annotated_with_their_images(client: RegistryClient) -> None:
    planned = plan_spark_application(full_application(), client=client, orchestrator="airflow", task="d.t", launch_id="L1")
    for role in ("driver", "executor"):
        metadata = planned.application["spec"][role]["template"]["metadata"]
        assert metadata["labels"]["imagegate.dev/launch"] == "L1"
        images = json.loads(metadata["annotations"]["imagegate.dev/images"])
        assert images == {name: str(p.pinned) for name, p in planned.images[role].items()}
    assert planned.application["spec"]["executor"]["template"]["metadata"]["labels"]["team"] == "data"
    assert planned.application["metadata"]["labels"]["imagegate.dev/orchestrator"] == "airflow"


def running_pod(planned: Any, role: str, name: str = "wordcount-driver") -> dict[str, Any]:
    """A pod as the API server would report it, built from the plan's template (what Spark merges)."""
    template = copy.deepcopy(planned.templates[role])
    pod = {"metadata": {"name": name, "labels": {**template["metadata"]["labels"], "spark-role": role}},
           "spec": template["spec"], "status": {"containerStatuses": []}}
    for container in pod["spec"]["containers"]:
        plan = planned.images[role][container["name"]]
        pod["status"]["containerStatuses"].append({"name": container["name"], "imageID": plan.launch})
    sidecars = planned.application["spec"][role].get("sidecars", [])
    pod["spec"]["containers"] += copy.deepcopy(sidecars)
    return pod


def test_the_verifier_accepts_the_planned_pods_and_refuses_anything_else(client: RegistryClient, registry: FakeRegistry) -> None:
    planned = plan_spark_application(full_application(), client=client)
    driver = running_pod(planned, "driver")
    executor = running_pod(planned, "executor", "wordcount-exec-1")
    assert planned.verify_pod(driver) == "driver" and planned.verify_pod(executor) == "executor"

    moved = copy.deepcopy(executor)  # the tag moved and the kubelet pulled something else
    moved["status"]["containerStatuses"][0]["imageID"] = f"{HOST}/data/spark@{digest(registry, 'data/spark', 'latest')}"
    with pytest.raises(LaunchMismatch):
        planned.verify_pod(moved)
    swapped = copy.deepcopy(executor)  # the application set another image at run time
    swapped["spec"]["containers"][0]["image"] = f"{HOST}/data/spark:latest"
    with pytest.raises(LaunchMismatch):
        planned.verify_pod(swapped)
    stranger = copy.deepcopy(executor)
    stranger["spec"]["containers"].append({"name": "injected", "image": planned.driver.launch})
    with pytest.raises(LaunchMismatch, match="injected"):
        planned.verify_pod(stranger)
    weakened = copy.deepcopy(driver)
    weakened["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    with pytest.raises(HardeningError) as caught:
        planned.verify_pod(weakened)
    assert caught.value.container == "wordcount-driver"
    unlabelled = copy.deepcopy(driver)
    del unlabelled["metadata"]["labels"]["spark-role"]
    with pytest.raises(LaunchMismatch):
        planned.verify_pod(unlabelled)


def test_one_registry_lookup_per_image_and_user(client: RegistryClient, registry: FakeRegistry) -> None:
    registry.reset_requests()
    planned = plan_spark_application(application(), client=client)
    pins = [r for r in registry.requests if r.path == "/v2/data/spark/manifests/4.3.0"]
    assert len(pins) == 1, registry.requests  # spec.image, driver and executor: one image, one pin
    assert planned.plans["spec.image"] is planned.driver


_IMAGES = st.sampled_from([SPARK, f"{HOST}/tools/log:1.0.0", f"{HOST}/tools/init:1.0.0", f"{HOST}/tools/tmpl:1.0.0"])
_CONTAINERS = st.lists(_IMAGES, max_size=2).map(lambda images: [{"name": f"c{i}", "image": im} for i, im in enumerate(images)])


@st.composite
def _roles(draw: Any) -> dict[str, Any]:
    section: dict[str, Any] = {}
    if draw(st.booleans()):
        section["image"] = SPARK
    for key in ("sidecars", "initContainers"):
        items = draw(_CONTAINERS)
        if items:
            section[key] = [{**c, "name": f"{key}-{c['name']}"} for c in items]
    if draw(st.booleans()):
        spec = {"containers": [{**c, "name": f"t-{c['name']}"} for c in draw(_CONTAINERS)]}
        inits = draw(_CONTAINERS)
        if inits:
            spec["initContainers"] = [{**c, "name": f"ti-{c['name']}"} for c in inits]
        section["template"] = {"spec": spec}
    return section


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(driver=_roles(), executor=_roles(), top=st.booleans(), confs=st.sets(st.sampled_from(sorted(
    ["spark.kubernetes.container.image", "spark.kubernetes.driver.container.image",
     "spark.kubernetes.executor.container.image"]))))
def test_property_no_image_is_left_unpinned(client: RegistryClient, driver: dict[str, Any], executor: dict[str, Any],
                                            top: bool, confs: set[str]) -> None:
    given_app = application(image=SPARK if top else None, driver=driver, executor=executor,
                            sparkConf={key: SPARK for key in confs})
    has_image = {role: bool(section.get("image") or top or {"spark.kubernetes.container.image",
                                                          f"spark.kubernetes.{role}.container.image"} & confs)
                 for role, section in (("driver", driver), ("executor", executor))}
    if not all(has_image.values()):
        with pytest.raises(SparkSpecError, match="no image"):
            plan_spark_application(given_app, client=client)
        return
    planned = plan_spark_application(given_app, client=client)
    found = list(image_fields(planned.application))
    given_count = sum(1 for _ in image_fields(given_app))
    assert len(found) >= given_count
    assert all(isinstance(v, str) and DIGEST_REF.fullmatch(v) for _, v in found), found
    for role in ("driver", "executor"):
        assert DIGEST_REF.fullmatch(planned.application["spec"][role]["image"])


def test_a_spec_that_shares_one_list_many_times_is_refused_before_any_registry_request(
    client: RegistryClient, registry: FakeRegistry
) -> None:
    """What the provider's yaml.safe_load builds from aliases: 25 levels of [x, x] are 33 million values once
    serialised to the API server; the gate refuses it at once (the walk counts each reference)."""
    shared: Any = {"name": "A", "value": "b"}
    for _ in range(25):
        shared = [shared, shared]
    registry.reset_requests()
    with pytest.raises(SparkSpecError, match="more than 100000 values") as caught:
        plan_spark_application(application(arguments=shared), client=client)
    assert caught.value.option == "SparkApplication" and registry.requests == []
    plan_spark_application(application(arguments=[str(i) for i in range(5000)]), client=client)  # large but real: fine


@pytest.mark.parametrize("shape", ["deep", "cycle"])
def test_a_spec_nested_too_deep_or_containing_itself_is_refused(client: RegistryClient, shape: str) -> None:
    app = application()
    if shape == "deep":
        nested: Any = "leaf"
        for _ in range(5000):
            nested = {"k": nested}
        app["spec"]["driver"]["labels"] = nested
    else:
        app["spec"]["driver"]["self"] = app["spec"]
    with pytest.raises(SparkSpecError, match="more than 100 levels") as caught:
        plan_spark_application(app, client=client)
    assert caught.value.option.startswith("SparkApplication.spec.driver")


def test_the_read_back_checks_the_launch_and_every_executor_its_driver_owns(client: RegistryClient) -> None:
    """verify_launch: the labelled pods, and executors owned by a labelled driver even without the label (a webhook
    dropped it); another application's pods are ignored; no driver at all is not a pass."""
    from imagegate import SparkReadBackError

    planned = plan_spark_application(full_application(), client=client, launch_id="L1")
    driver = running_pod(planned, "driver")
    driver["metadata"]["uid"] = "uid-driver"
    labelled = running_pod(planned, "executor", "wordcount-exec-1")
    labelled["metadata"]["uid"] = "uid-exec-1"
    unlabelled = running_pod(planned, "executor", "wordcount-exec-2")
    unlabelled["metadata"].update(uid="uid-exec-2", ownerReferences=[{"kind": "Pod", "uid": "uid-driver"}])
    del unlabelled["metadata"]["labels"]["imagegate.dev/launch"]
    other = copy.deepcopy(unlabelled)  # another application's executor: not this launch's to judge
    other["metadata"].update(name="other-exec-1", uid="uid-other", ownerReferences=[{"kind": "Pod", "uid": "uid-x"}])
    other["spec"]["containers"][0]["image"] = f"{HOST}/data/spark:latest"

    pods = [driver, labelled, unlabelled, other, copy.deepcopy(labelled)]  # listed twice (both selectors): once
    assert planned.verify_launch(pods) == {"wordcount-driver": "driver", "wordcount-exec-1": "executor",
                                           "wordcount-exec-2": "executor"}

    smuggled = copy.deepcopy(unlabelled)  # owned by the driver, no launch label, another image: caught
    smuggled["spec"]["containers"][0]["image"] = f"{HOST}/data/spark:latest"
    with pytest.raises(LaunchMismatch, match="wordcount-exec-2"):
        planned.verify_launch([driver, labelled, smuggled])

    with pytest.raises(SparkReadBackError, match="no driver pod labelled imagegate.dev/launch=L1") as caught:
        planned.verify_launch([labelled, other])  # the driver is gone (or lost its label): nothing verified
    assert caught.value.found == 1 and caught.value.launch_id == "L1"
    with pytest.raises(SparkReadBackError, match="no driver pod"):
        planned.verify_launch([])
    with pytest.raises(SparkReadBackError, match="no launch id"):
        plan_spark_application(application(), client=client).verify_launch([driver])


def test_in_client_mode_the_executors_are_the_launch(client: RegistryClient) -> None:
    """spark-submit --deploy-mode client: the driver is the submitting process, no pod; executors must be found."""
    from imagegate import SparkReadBackError

    planned = plan_spark_application(full_application(), client=client, launch_id="L1")
    executor = running_pod(planned, "executor", "wordcount-exec-1")
    assert planned.verify_launch([executor], driver_pod=False) == {"wordcount-exec-1": "executor"}
    with pytest.raises(SparkReadBackError, match="no pod labelled"):
        planned.verify_launch([], driver_pod=False)
    with pytest.raises(SparkReadBackError, match="no driver pod"):
        planned.verify_launch([executor])


def test_the_executors_are_kept_for_the_read_back_and_harmless_settings_pass(client: RegistryClient) -> None:
    planned = plan_spark_application(application(
        driver={"javaOptions": "-Xss4m -Dapp.mode='a b'", "envVars": {"SPARK_SUBMIT_OPTS": "-Dspark.ui.enabled=false"},
                "labels": {"team": "data"}, "envFrom": [{"prefix": "APP_", "configMapRef": {"name": "settings"}}]},
        executor={"instances": 2, "deleteOnTermination": False}), client=client, launch_id="L1")
    assert planned.application["spec"]["executor"]["deleteOnTermination"] is False
    planned = plan_spark_application(application(), client=client, launch_id="L1")
    assert planned.application["spec"]["executor"]["deleteOnTermination"] is False


def test_a_gate_label_on_the_application_is_refused(client: RegistryClient) -> None:
    app = application()
    app["metadata"]["labels"] = {"imagegate.dev/launch": "other"}
    with pytest.raises(SparkSpecError) as caught:
        plan_spark_application(app, client=client, launch_id="L1")
    assert caught.value.option == "metadata.labels['imagegate.dev/launch']"


APPARMOR = "container.apparmor.security.beta.kubernetes.io/spark-kubernetes-driver"


@pytest.mark.parametrize("change", [
    {"driver": {"annotations": {APPARMOR: "unconfined"}}},  # the operator puts them on the driver pod
    {"sparkConf": {f"spark.kubernetes.driver.annotation.{APPARMOR}": "unconfined"}},
    {"executor": {"annotations": {"seccomp.security.alpha.kubernetes.io/pod": "unconfined"}}},
])
def test_pod_annotations_that_unconfine_the_pods_are_refused(client: RegistryClient, change: dict[str, Any]) -> None:
    with pytest.raises(HardeningError, match="must be runtime/default|unconfined"):
        plan_spark_application(application(**change), client=client)
    plan_spark_application(application(**change), client=client, harden=False)  # hardening off: the user's call
    plan_spark_application(application(driver={"annotations": {APPARMOR: "runtime/default"}}), client=client)


@pytest.mark.parametrize("change, where", [
    ({"driver": {"envVars": {"SPARK_CONF_DIR": "/mnt/conf"}}}, "spec.driver.envVars['SPARK_CONF_DIR']"),
    ({"sparkConf": {"spark.executorEnv.SPARK_CONF_DIR": "/mnt/conf"}}, "spec.sparkConf['spark.executorEnv.SPARK_CONF_DIR']"),
    ({"driver": {"env": [{"name": "SPARK_CONF_DIR", "value": "/mnt/conf"}]}}, "spec.driver.env[0]"),
    ({"executor": {"envFrom": [{"configMapRef": {"name": "c"}, "prefix": "SPARK_"}]}}, "spec.executor.envFrom[0]"),
])
def test_spark_conf_dir_that_would_point_spark_at_unread_settings_is_refused(
    client: RegistryClient, change: dict[str, Any], where: str
) -> None:
    with pytest.raises(SparkSpecError) as caught:
        plan_spark_application(application(**change), client=client)
    assert any(p.startswith(where + ": ") for p in caught.value.problems), caught.value.problems
