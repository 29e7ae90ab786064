"""Spark on Kubernetes through the one gate: every driver and executor image pinned, checked, hardened.

Two doors lead Spark onto a cluster, and both get the same answer from :func:`~imagegate.plan_launch`
(pinned, non-root numeric user, signature, vulnerabilities, registry: the policy's checks) and the same
restricted profile (:func:`~imagegate.harden_pod`):

- :func:`plan_spark_application`: a kubeflow ``SparkApplication`` (``sparkoperator.k8s.io/v1beta2``, as the
  spark-operator v2.5 CRD defines it). Every image field the CRD has is found — ``spec.image``,
  ``spec.{driver,executor}.image``, their ``sidecars[]`` and ``initContainers[]``, the containers of their
  pod ``template`` — and ``spark.kubernetes.*container.image`` in ``spec.sparkConf``; any other key that
  names an image is refused (fail closed: a newer CRD field is not silently launched unchecked). The copy
  it returns names only ``repo@sha256:…``, writes the driver's and executor's effective image explicitly
  (nothing falls back to a default), and carries the restricted security context twice: in the pod
  ``template`` (which the operator hands to spark-submit, so it holds without the operator's webhook) and
  in ``securityContext``/``podSecurityContext`` (which the webhook, when it runs, copies onto the pods).
- :func:`pin_spark_conf`: a ``spark-submit --master k8s://…`` conf. The three image confs are pinned;
  the driver and executor pod template files (``spark.kubernetes.{driver,executor}.podTemplateFile``) are
  read, their images pinned, the restricted context applied, and new files written (Spark merges them
  into the pods it builds).

Settings that would reach around the gate are read as Spark reads them and refused: ``-D`` java options
(split as Spark's launcher splits them, :func:`parse_option_string`), properties files (read as
java.util.Properties reads them, :func:`read_properties`), the environment the JVM takes options from, labels
under ``imagegate.dev/``, and executors deleted on termination (both doors write ``deleteOnTermination``
false). What neither door can see — application code that sets an image conf at run time, a webhook that
rewrites the pods — is what :meth:`SparkPlan.verify_pod` is for: every driver and executor pod the job
created, read back from the API server, must run the planned digests (its container statuses' ``imageID``)
under the restricted profile.

Refusals, before anything exists: :class:`~imagegate.CheckFailed` (an image; ``.role`` names its field),
:class:`~imagegate.HardeningError` (the restricted profile), :class:`SparkSpecError` (a field or conf this
module does not understand or that would reach around the gate; ``.problems`` names each).
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import re
import tempfile
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping

from imagegate._errors import ImagegateError, typed_errors
from imagegate._gate import (
    LABEL_LAUNCH, ImageSource, LaunchMismatch, LaunchPlan, SourceError, plan_launch, pod_metadata, pod_user,
    reported_digest,
)
from imagegate._hardening import CONTAINER_FIELDS, HardeningError, harden_pod, restricted_violations
from imagegate._owner import TaskIdentity
from imagegate._policy import Backend, Policy

if TYPE_CHECKING:
    from imagegate._registry import RegistryClient

ROLES = ("driver", "executor")
#: The container Spark runs in each pod (the names the spark-operator passes as podTemplateContainerName).
SPARK_CONTAINERS = {"driver": "spark-kubernetes-driver", "executor": "spark-kubernetes-executor"}
IMAGE_CONF = "spark.kubernetes.container.image"
ROLE_IMAGE_CONF = {role: f"spark.kubernetes.{role}.container.image" for role in ROLES}
TEMPLATE_FILE_CONF = {role: f"spark.kubernetes.{role}.podTemplateFile" for role in ROLES}
TEMPLATE_CONTAINER_CONF = {role: f"spark.kubernetes.{role}.podTemplateContainerName" for role in ROLES}
IMAGE_CONFS = frozenset({IMAGE_CONF, *ROLE_IMAGE_CONF.values()})
#: Confs whose names contain "image" but name no image.
_NOT_IMAGES = frozenset({"spark.kubernetes.container.image.pullPolicy", "spark.kubernetes.container.image.pullSecrets"})
#: A value that smuggles a Spark Kubernetes image, template, pod-rewriting or volume setting (``-Dspark.kubernetes…``),
#: searched for once quotes and backslashes are removed (Spark's launcher removes them from java options).
_SMUGGLED = re.compile(r"spark\.kubernetes\.[^\s=]*?(image|podtemplate|featuresteps|volumes)", re.IGNORECASE)
_FEATURE_STEPS = re.compile(r"^spark\.kubernetes\.(driver|executor)\.pod\.featuresteps$", re.IGNORECASE)
_HOST_VOLUMES = re.compile(r"^spark\.kubernetes\.(driver|executor)\.volumes\.(hostpath|nfs)\.", re.IGNORECASE)
#: The gate's own pod labels and annotations (``imagegate.dev/launch``…): the read-back finds the pods by them.
GATE_PREFIX = "imagegate.dev/"
#: Confs that put a label or annotation on the pods or services (Spark lays them over the template's).
_GATE_METADATA_CONF = re.compile(r"^spark\.kubernetes\..*\.(label|annotation)\.imagegate\.dev/", re.IGNORECASE)
DELETE_ON_TERMINATION = "spark.kubernetes.executor.deleteOnTermination"
#: Environment variables the JVM (or Spark's launcher, for SPARK_SUBMIT_OPTS) reads as JVM options: a
#: ``-Dspark.…=…`` in one sets a conf of the driver that creates the executor pods.
JVM_OPTION_ENV = frozenset({"SPARK_SUBMIT_OPTS", "JAVA_TOOL_OPTIONS", "JDK_JAVA_OPTIONS", "_JAVA_OPTIONS"})
#: Environment that points Spark at other configuration (a spark-defaults.conf and java-opts the gate never read).
CONF_DIR_ENV = frozenset({"SPARK_CONF_DIR"})
#: Confs that set an environment variable of the driver or executor pods (``spark.kubernetes.driverEnv.NAME``).
_ENV_CONF = re.compile(r"^(spark\.kubernetes\.driverEnv|spark\.executorEnv|spark\.yarn\.appMasterEnv)\.(.*)$",
                       re.IGNORECASE | re.DOTALL)
#: The confs imagegate pins or writes itself: a ``-D`` option that sets one is a second, unpinned value.
_GATE_CONFS = frozenset({*IMAGE_CONFS, *TEMPLATE_FILE_CONF.values(), *TEMPLATE_CONTAINER_CONF.values()})
#: SparkApplication maps whose keys are free-form (label, annotation and env names): never image fields.
_FREE_FORM = frozenset({"labels", "annotations", "serviceAnnotations", "serviceLabels", "nodeSelector", "hadoopConf",
                        "envVars", "envSecretKeyRefs", "batchSchedulerOptions", "metadata"})
_IMAGE_KEY_OK = frozenset({"imagePullPolicy", "imagePullSecrets"})
MAX_TEMPLATE_BYTES = 1 << 20
MAX_PROPERTIES_BYTES = 4 << 20
#: Bounds on a SparkApplication or pod template the gate walks. A real one has a few hundred values, nested
#: twenty deep; a dict that shares one list many times (what a YAML loader that follows aliases builds) would be
#: walked, then serialised to the API server, once per reference: 25 shared levels are 33 million values.
MAX_NODES = 100_000
MAX_DEPTH = 100


class SparkSpecError(SourceError):
    """A SparkApplication field or Spark conf the gate refuses (nothing was created). ``.problems`` names each,
    with its path and the fix; ``.option`` is the first one's path."""

    _fields = ("option", "problems")

    def __init__(self, problems: Iterable[tuple[str, str]]) -> None:
        items = tuple(problems)
        self.problems = tuple(f"{where}: {why}" for where, why in items)
        super().__init__("imagegate refused the Spark job (nothing was created): " + "; ".join(self.problems),
                         option=items[0][0] if items else None)


@dataclass(frozen=True)
class SparkPlan:
    """What passed the gate for one Spark job, and how to check what the cluster then ran.

    ``images`` maps each role (``driver``, ``executor``) to ``{container name: LaunchPlan}`` for every
    container its pods run; ``plans`` maps each image field (``spec.driver.image``,
    ``spec.executor.sidecars[log]``, ``spark.kubernetes.container.image``…) to its plan, in order.
    ``application`` is the pinned SparkApplication (:func:`plan_spark_application`; empty for a conf);
    ``templates`` the pinned, hardened pod template of each role.
    """

    images: Mapping[str, Mapping[str, LaunchPlan]]
    plans: Mapping[str, LaunchPlan]
    templates: Mapping[str, dict[str, Any]]
    application: dict[str, Any] = field(default_factory=dict)
    harden: bool = True
    launch_id: str | None = None

    @property
    def driver(self) -> LaunchPlan:
        return self.images["driver"][SPARK_CONTAINERS["driver"]]

    @property
    def executor(self) -> LaunchPlan:
        return self.images["executor"][SPARK_CONTAINERS["executor"]]

    def verify_pod(self, pod: Mapping[str, Any]) -> str:
        """A driver or executor pod as the API server reports it (a camelCase dict): every container runs its
        planned launch string, every container status that reports an ``imageID`` one of its plan's digests,
        and (when hardened) the pod passes the restricted profile. Returns the pod's role.

        Raises:
            LaunchMismatch: a container runs an image that was not planned for it (or the pod is no Spark pod).
            HardeningError: the pod breaks the restricted profile (``.container`` names the pod).
        """
        metadata = pod.get("metadata") or {}
        name = str(metadata.get("name") or "(a pod)")
        role = str((metadata.get("labels") or {}).get("spark-role") or "")
        expected = self.images.get(role)
        if expected is None:
            raise LaunchMismatch(("a Spark driver or executor pod",), f"label spark-role={role!r}", f"pod {name!r}")
        spec = pod.get("spec") or {}
        for field_name in CONTAINER_FIELDS:
            for container in spec.get(field_name) or ():
                plan = expected.get(container.get("name", ""))
                image = container.get("image") or "(no image)"
                if plan is None or image != plan.launch:
                    want = (plan.launch,) if plan else tuple(sorted(p.launch for p in expected.values()))
                    raise LaunchMismatch(want, image, f"container {container.get('name')!r} of {role} pod {name!r}")
        status = pod.get("status") or {}
        for field_name in ("initContainerStatuses", "containerStatuses", "ephemeralContainerStatuses"):
            for entry in status.get(field_name) or ():
                plan = expected.get(entry.get("name", ""))
                if entry.get("imageID") and plan is not None:
                    plan.verify(entry["imageID"], container=f"container {entry.get('name')!r} of {role} pod {name!r}")
        if self.harden:
            problems = restricted_violations(pod)
            if problems:
                raise HardeningError(problems, runtime="kubernetes", container=name)
        return role

    def verify_launch(self, pods: Iterable[Mapping[str, Any]], *, driver_pod: bool = True) -> dict[str, str]:
        """Every pod of this launch among *pods* (camelCase dicts as the API server reports them), each checked with
        :meth:`verify_pod`; returns ``{pod name: role}``.

        The launch's pods are those labelled ``imagegate.dev/launch=<launch_id>`` and every pod a labelled driver
        owns (Spark makes the driver pod the owner of its executors): an executor created without the label (a
        template or a webhook that dropped it) is checked all the same rather than missed. Pass the launch's
        labelled pods and the namespace's ``spark-role=executor`` pods; others are ignored. At least one driver pod
        must be found (with ``driver_pod=False``, spark-submit's client mode, where the driver is no pod: at least
        one pod of the launch): a read-back that finds nothing has verified nothing.

        Raises:
            SparkReadBackError: no driver pod of the launch was found.
            LaunchMismatch: a pod runs an image not planned for it.
            HardeningError: a pod breaks the restricted profile.
        """
        if not self.launch_id:
            raise SparkReadBackError(None, 0)
        seen: dict[str, Mapping[str, Any]] = {}
        for pod in pods:
            metadata = pod.get("metadata") or {}
            seen.setdefault(str(metadata.get("uid") or metadata.get("name") or id(pod)), pod)
        labelled = {uid: pod for uid, pod in seen.items()
                    if ((pod.get("metadata") or {}).get("labels") or {}).get(LABEL_LAUNCH) == self.launch_id}
        drivers = {uid for uid, pod in labelled.items()
                   if ((pod.get("metadata") or {}).get("labels") or {}).get("spark-role") == "driver"}
        owned = {uid: pod for uid, pod in seen.items() if uid not in labelled and any(
            isinstance(ref, Mapping) and ref.get("uid") in drivers
            for ref in (pod.get("metadata") or {}).get("ownerReferences") or ())}
        if (driver_pod and not drivers) or not labelled:
            raise SparkReadBackError(self.launch_id, len(labelled), driver_pod=driver_pod)
        return {str((pod.get("metadata") or {}).get("name")): self.verify_pod(pod)
                for pod in [*labelled.values(), *owned.values()]}

    def running_digests(self, pod: Mapping[str, Any]) -> dict[str, str]:
        """``{container: digest}`` the pod's container statuses report (for the record of what ran)."""
        status = pod.get("status") or {}
        return {entry.get("name", ""): reported_digest(entry["imageID"])
                for field_name in ("initContainerStatuses", "containerStatuses")
                for entry in status.get(field_name) or () if entry.get("imageID")}

    def to_dict(self) -> dict[str, Any]:
        return {
            "driver": self.driver.launch,
            "executor": self.executor.launch,
            "images": {role: {name: str(p.pinned) for name, p in plans.items()} for role, plans in self.images.items()},
            "reports": {where: p.report.to_dict() for where, p in self.plans.items()},
        }


class SparkReadBackError(ImagegateError):
    """The pods of a Spark launch could not be read back: no driver pod carries its launch label, so nothing that
    ran was verified. ``.launch_id`` (None: the plan has none), ``.found``: the launch's pods that were found."""

    _fields = ("launch_id", "found")

    def __init__(self, launch_id: str | None, found: int, *, driver_pod: bool = True) -> None:
        self.launch_id = launch_id
        self.found = found
        if launch_id is None:
            text = ("the Spark plan has no launch id, so its pods cannot be found. Fix: plan it with launch_id=… "
                    "(plan_spark_application / pin_spark_conf)")
        elif not driver_pod:
            text = (f"no pod labelled {LABEL_LAUNCH}={launch_id} was found, so nothing that ran was verified. Fix: "
                    "keep the executor pods until the job is read back (spark.kubernetes.executor.deleteOnTermination"
                    "=false) and make sure no webhook or template drops the pod template's labels")
        else:
            text = (f"no driver pod labelled {LABEL_LAUNCH}={launch_id} was found ({found} other pod(s) of the launch), "
                    "so nothing that ran was verified. Fix: keep the driver pod until the job is read back (do not "
                    "delete it on completion) and make sure no webhook or template drops the pod template's labels")
        super().__init__(text)


@dataclass(frozen=True)
class PinnedSparkConf:
    """A spark-submit conf with every Kubernetes image conf pinned and the restricted pod templates written.

    ``conf`` is the whole conf to pass (``--conf KEY=VALUE`` each); ``files`` the pod template file of each
    role (written under a private directory; remove it when the job is done); ``plan`` the images.
    """

    conf: dict[str, str]
    files: Mapping[str, Path]
    plan: SparkPlan

    def args(self) -> list[str]:
        """``["--conf", "KEY=VALUE", …]`` for a spark-submit command line."""
        return [arg for key, value in self.conf.items() for arg in ("--conf", f"{key}={value}")]


# -- confs ------------------------------------------------------------------------------------------


def conf_problems(conf: Mapping[str, Any], *, where: str, template_files: bool) -> list[tuple[str, str]]:
    """What in a Spark conf would reach around the gate (one rule for both doors).

    Refused: a conf under ``spark.kubernetes.`` that names an image, template or container image it does
    not know (Spark's keys are case-sensitive: a misspelt one is ambiguous, not harmless); pod feature steps
    (classes that rewrite the pod after the templates); ``hostPath`` and ``nfs`` volumes (the restricted
    profile forbids them); a label or annotation under ``imagegate.dev/`` (Spark lays conf labels over the
    template's: it would replace the gate's and hide the pods from the read-back); executors deleted on
    termination (gone before the read-back); a key with ``=`` (spark-submit splits ``--conf`` there); a value
    that embeds such a setting (``-Dspark.kubernetes…`` in java options or an environment variable, each ``-D``
    option checked as a conf entry of its own: :func:`java_option_problems`); and, unless *template_files*, a
    pod template file (the SparkApplication's own ``template`` fields are what the gate reads).
    """
    problems: list[tuple[str, str]] = []
    for key, value in conf.items():
        problems += _conf_entry_problems(str(key), value, at=f"{where}[{str(key)!r}]", template_files=template_files)
    return _unique(problems)


def _conf_entry_problems(key: str, value: Any, *, at: str, template_files: bool,
                         option: bool = False) -> list[tuple[str, str]]:
    """:func:`conf_problems` for one entry ``key=value`` at *at* (*option*: it came from a ``-D`` java option, where
    even the confs the gate pins are a second value it never checked)."""
    whys: list[str] = []
    lowered = key.lower()
    if "=" in key:
        whys.append(f"spark-submit splits --conf at the first '=', so {key!r} sets another conf than the one named. "
                    "Fix: remove the '=' from the key")
    elif option and key in _GATE_CONFS:
        whys.append("imagegate pins this conf itself; set as a -D java option it is a second value the gate never "
                    "checked. Fix: give it as a conf entry")
    elif key in IMAGE_CONFS or key in _NOT_IMAGES or key in TEMPLATE_CONTAINER_CONF.values():
        pass
    elif key in TEMPLATE_FILE_CONF.values():
        if not template_files:
            whys.append("a pod template file is read by the spark-operator from its own disk, which the gate cannot "
                        "see. Fix: put the template under spec.driver.template / spec.executor.template")
    elif _FEATURE_STEPS.match(key):
        whys.append("pod feature steps rewrite the pods after the gate (any image, any security context). Fix: remove "
                    "it; use a pod template")
    elif _HOST_VOLUMES.match(key):
        whys.append("hostPath and nfs volumes are not allowed by the restricted Pod Security Standard. Fix: use a "
                    "persistentVolumeClaim or emptyDir volume")
    elif _GATE_METADATA_CONF.match(key):
        whys.append(_GATE_METADATA_WHY)
    elif lowered.startswith("spark.kubernetes.") and any(w in lowered for w in ("image", "podtemplate")):
        whys.append(f"imagegate does not know this image or pod template conf, so it cannot check what it names. Fix: "
                    f"use {IMAGE_CONF}, {ROLE_IMAGE_CONF['driver']} or {ROLE_IMAGE_CONF['executor']}")
    if key == DELETE_ON_TERMINATION and str(value).strip().lower() != "false":
        whys.append(_DELETE_WHY)
    env = _ENV_CONF.match(key)
    if env is not None and env.group(2) in CONF_DIR_ENV:
        whys.append(_CONF_DIR_WHY)
    problems = [(at, why) for why in whys]
    if isinstance(value, str):
        if lowered.endswith("javaoptions") or (env is not None and env.group(2) in JVM_OPTION_ENV):
            problems += java_option_problems(value, where=at)
        else:
            problems += _smuggled_text(value, at)
    return problems


_GATE_METADATA_WHY = ("labels and annotations under imagegate.dev/ are the gate's own: Spark and the operator lay a "
                      "user's over the gate's, which would hide the pods from the read-back after the job. Fix: remove "
                      "it, or use another prefix")
_CONF_DIR_WHY = ("SPARK_CONF_DIR points Spark at another spark-defaults.conf and java-opts, which the gate never read. "
                 "Fix: remove it; give the settings as confs")
_DELETE_WHY = ("executor pods deleted when they end are gone before imagegate reads them back after the job. Fix: "
               "remove it (imagegate sets false: the executors then go with the driver pod, or the application, "
               "that owns them)")


def java_option_problems(value: str, *, where: str) -> list[tuple[str, str]]:
    """JVM options (``spark.driver.extraJavaOptions``, ``SPARK_SUBMIT_OPTS``, ``JAVA_TOOL_OPTIONS``…) at *where*,
    split as Spark's launcher splits them (:func:`parse_option_string`): each ``-Dkey=value`` is a conf entry and
    gets the conf checks, and an options file (``@file``, ``-XX:VMOptionsFile=``, ``-XX:Flags=``) is refused, since
    the gate cannot read it. The JVM splits the ``JAVA_TOOL_OPTIONS`` family its own way (no backslash escapes),
    so the options are also split at whitespace once quotes and backslashes are removed, and that reading is
    checked too; and the whole string, so cleaned, must not mention a Kubernetes image, template, feature-steps
    or volume conf at all."""
    try:
        options = parse_option_string(value)
    except ValueError as exc:
        return [(where, f"Spark's launcher cannot split these java options ({exc}). Fix: close the quote, or escape "
                        "the trailing backslash")]
    problems: list[tuple[str, str]] = []
    for option in dict.fromkeys([*options, *_unquoted(value).split()]):
        if option.startswith("@") or option.lower().startswith(("-xx:vmoptionsfile", "-xx:flags")):
            problems.append((where, f"{option!r} reads JVM options from a file the gate cannot see. Fix: write the "
                                    "options out"))
        elif option.startswith("-D"):
            key, _, setting = option[2:].partition("=")
            problems += [(where, f"-D{key}: {why}") for _, why in
                         _conf_entry_problems(key, setting, at=where, template_files=False, option=True)]
    return _unique(problems + _smuggled_text(value, where))


def parse_option_string(text: str) -> list[str]:
    """The JVM arguments Spark's launcher makes of a java options string (``CommandBuilderUtils.parseOptionString``,
    applied to ``spark.driver.extraJavaOptions``, ``…defaultJavaOptions`` and ``SPARK_SUBMIT_OPTS``), ported line
    for line: quotes group and are removed, a backslash outside single quotes escapes the next character.

    Our own because no Python library parses the JVM option strings the way Spark's launcher does (``shlex`` keeps
    a backslash inside double quotes before most characters and knows comments; Spark does neither). Java's
    quirk is kept: it steps through UTF-16 units but reads whole code points, so a character outside the BMP is
    followed by a copy of its low surrogate. Raises ValueError where Spark's does (an open quote, a trailing
    backslash)."""
    options: list[str] = []
    option: list[str] = []
    in_opt = in_single = in_double = escape_next = has_data = False
    for char in _code_points_at(text):
        if escape_next:
            option.append(char)
            escape_next = False
        elif in_opt:
            if char == "\\":
                if in_single:
                    option.append(char)
                else:
                    escape_next = True
            elif char == "'":
                if in_double:
                    option.append(char)
                else:
                    in_single = not in_single
            elif char == '"':
                if in_single:
                    option.append(char)
                else:
                    in_double = not in_double
            elif not _java_whitespace(char) or in_single or in_double:
                option.append(char)
            else:
                options.append("".join(option))
                option, in_opt, has_data = [], False, False
        elif char == "'":
            in_single = in_opt = has_data = True
        elif char == '"':
            in_double = in_opt = has_data = True
        elif char == "\\":
            escape_next = in_opt = has_data = True
        elif not _java_whitespace(char):
            in_opt = has_data = True
            option.append(char)
    if in_single or in_double or escape_next:
        raise ValueError(f"Invalid option string: {text}")
    if has_data:
        options.append("".join(option))
    return [_utf16(item) for item in options]


def _code_points_at(text: str) -> Iterator[str]:
    """``s.codePointAt(i)`` for every UTF-16 index ``i`` of *text*, as Spark's ``for (i = 0; i < s.length(); i++)``
    reads it."""
    units = text.encode("utf-16-be", "surrogatepass")
    codes = [int.from_bytes(units[i:i + 2], "big") for i in range(0, len(units), 2)]
    for index, code in enumerate(codes):
        low = codes[index + 1] if index + 1 < len(codes) else None
        if 0xD800 <= code < 0xDC00 and low is not None and 0xDC00 <= low < 0xE000:
            yield chr(0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00))
        else:
            yield chr(code)


def _utf16(text: str) -> str:
    """*text* with UTF-16 surrogate pairs joined into the characters Java's strings hold."""
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")


def _java_whitespace(char: str) -> bool:
    """``Character.isWhitespace``: the Unicode space separators except the no-break ones, and nine controls."""
    if char in "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f":
        return True
    return char not in "\u00a0\u2007\u202f" and unicodedata.category(char) in ("Zs", "Zl", "Zp")


def _unquoted(text: str) -> str:
    """*text* without quotes and backslashes: what any of the JVM's or Spark's option parsers may make of a key."""
    return re.sub(r"['\"\\]", "", text)


def _smuggled_text(value: str, at: str) -> list[tuple[str, str]]:
    found = _SMUGGLED.search(_unquoted(value))
    if found is None:
        return []
    return [(at, f"the value sets {found.group(0)!r} where the gate cannot read it (a -D java option, an environment "
                 "variable?). Fix: give image, template and volume settings as conf entries of their own "
                 "(spec.sparkConf, --conf), which the gate checks")]


def _unique(problems: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    return list(dict.fromkeys(problems))


def properties_problems(text: str, *, where: str) -> list[tuple[str, str]]:
    """A Spark properties file (``--properties-file``, ``spark-defaults.conf``) read as spark-submit reads it
    (:func:`read_properties`, java.util.Properties' grammar: escapes, continuations, ``:`` separators): the confs the
    gate pins (images, templates) are refused there, and every entry gets the conf checks (:func:`conf_problems`)."""
    try:
        entries = read_properties(text)
    except ValueError as exc:
        return [(where, f"java.util.Properties cannot read it ({exc}), so spark-submit would fail. Fix: write "
                        "\\u followed by four hex digits")]
    problems: list[tuple[str, str]] = []
    for key, value in entries:
        if key in _GATE_CONFS:
            problems.append((where, f"it sets {key!r}, which imagegate does not read from files. Fix: give Kubernetes "
                                    "image and template settings as conf entries, which the gate pins"))
        problems += [(where, f"{key!r}: {why}") for _, why in
                     _conf_entry_problems(key, value.strip(), at=where, template_files=False)]
    return _unique(problems)


def read_properties(text: str) -> list[tuple[str, str]]:
    """The (key, value) entries ``java.util.Properties.load`` reads from *text*, in order (in Java the last of a key
    wins), ported from OpenJDK's ``Properties.LineReader`` and ``load0``/``loadConvert``: comments (``#``, ``!``),
    the key ending at an unescaped ``=``, ``:`` or blank, ``\\``-newline continuations, and the escapes ``\\uXXXX``,
    ``\\t``, ``\\n``, ``\\r``, ``\\f``, any other ``\\c`` standing for ``c``. Written here because what a key means
    decides a verdict: Python's configparser and the PyPI readers are not tested against the JDK here.
    Raises ValueError ("Malformed \\uxxxx encoding.") where Java does."""
    entries: list[tuple[str, str]] = []
    for line in _property_lines(text):
        key_len, value_start, has_sep, backslash = 0, len(line), False, False
        while key_len < len(line):
            char = line[key_len]
            if char in "=:" and not backslash:
                value_start, has_sep = key_len + 1, True
                break
            if char in " \t\f" and not backslash:
                value_start = key_len + 1
                break
            backslash = (not backslash) if char == "\\" else False
            key_len += 1
        while value_start < len(line):
            char = line[value_start]
            if char not in " \t\f":
                if has_sep or char not in "=:":
                    break
                has_sep = True
            value_start += 1
        entries.append((_load_convert(line[:key_len]), _load_convert(line[value_start:])))
    return entries


def _property_lines(text: str) -> Iterator[str]:
    """``Properties.LineReader.readLine``: the logical lines of *text*, comments and blank lines skipped, leading
    blanks dropped, a line ending in an odd number of backslashes joined to the next (whose leading blanks go)."""
    index, end = 0, len(text)
    while True:
        line: list[str] = []
        skip_white, appended, backslash = True, False, False
        while True:
            if index >= end:
                if line:
                    yield "".join(line[:-1] if backslash else line)
                return
            char = text[index]
            index += 1
            if skip_white:
                if char in " \t\f" or (not appended and char in "\r\n"):
                    continue
                skip_white = appended = False
            if not line and char in "#!":  # a comment: the rest of the line
                while index < end and text[index] not in "\r\n":
                    index += 1
                if index >= end:
                    return
                index += 1
                skip_white = True
                continue
            if char not in "\r\n":
                line.append(char)
                backslash = (not backslash) if char == "\\" else False
                continue
            if not line:
                skip_white = True
                continue
            if index >= end:
                yield "".join(line[:-1] if backslash else line)
                return
            if not backslash:
                yield "".join(line)
                break
            line.pop()  # the backslash before the line break joins the next line
            skip_white, appended, backslash = True, True, False
            if char == "\r" and text[index] == "\n":
                index += 1


def _load_convert(chars: str) -> str:
    """``Properties.loadConvert``: the escapes of a key or value resolved (UTF-16 surrogate pairs joined)."""
    if "\\" not in chars:
        return chars
    out: list[str] = []
    index, end = 0, len(chars)
    while index < end:
        char = chars[index]
        index += 1
        if char != "\\":
            out.append(char)
            continue
        if index >= end:  # LineReader never leaves one; refuse rather than guess
            raise ValueError("a trailing backslash")
        char = chars[index]
        index += 1
        if char == "u":
            digits = chars[index:index + 4]
            if len(digits) < 4 or any(d not in "0123456789abcdefABCDEF" for d in digits):
                raise ValueError("Malformed \\uxxxx encoding.")
            out.append(chr(int(digits, 16)))
            index += 4
        else:
            out.append({"t": "\t", "r": "\r", "n": "\n", "f": "\f"}.get(char, char))
    return _utf16("".join(out))


# -- the walk ---------------------------------------------------------------------------------------


class _Planner:
    """One gate call per (image, user) within a job; every plan kept under the field that named it."""

    def __init__(self, policy: Policy, client: RegistryClient | None, today: dt.date | None) -> None:
        self.policy, self.client, self.today = policy, client, today
        self.plans: dict[str, LaunchPlan] = {}
        self._cache: dict[tuple[str, str | None], LaunchPlan] = {}

    def plan(self, image: Any, *, where: str, user: str | None = None) -> LaunchPlan:
        if not isinstance(image, str) or not image.strip():
            raise SparkSpecError([(where, f"an image must be a reference string, not {image!r}")])
        key = (image.strip(), user)
        plan = self._cache.get(key)
        if plan is None:
            plan = plan_launch(ImageSource(image=image.strip()), backend=Backend.KUBERNETES, user=user,
                               policy=self.policy, client=self.client, role=where, today=self.today,
                               fix=f"pin {where} to a checked image (REPO:TAG of a non-root image, or REPO@sha256:…)")
            self._cache[key] = plan
        self.plans.setdefault(where, plan)
        return plan


def _dict(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SparkSpecError([(where, f"must be a mapping, not {type(value).__name__}")])
    return dict(value)


def _list(value: Any, where: str) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, Mapping) for item in value):
        raise SparkSpecError([(where, "must be a list of mappings")])
    return [dict(item) for item in value]


def _image_keys(value: Any, path: str) -> Iterator[str]:
    """The path of every key that names an image (``image``, ``…Image``), outside free-form maps."""
    if isinstance(value, Mapping):
        for key, child in value.items():
            key = str(key)
            here = f"{path}.{key}"
            if "image" in key.lower() and key not in _IMAGE_KEY_OK:
                yield here
            if key not in _FREE_FORM and key != "sparkConf":  # sparkConf: conf_problems
                yield from _image_keys(child, here)
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _image_keys(child, f"{path}[{index}]")


_KNOWN_IMAGE_PATHS = re.compile(
    r"^spec(\.image"
    r"|\.(driver|executor)\.image"
    r"|\.(driver|executor)\.(sidecars|initContainers)\[\d+\]\.image"
    r"|\.(driver|executor)\.template\.spec\.(containers|initContainers|ephemeralContainers)\[\d+\]\.image)$"
)


def _named(containers: list[dict[str, Any]], where: str) -> None:
    seen: set[str] = set()
    for index, container in enumerate(containers):
        name = container.get("name")
        if not isinstance(name, str) or not name:
            raise SparkSpecError([(f"{where}[{index}]", "a container needs a name")])
        if name in seen:
            raise SparkSpecError([(f"{where}[{index}]", f"a second container named {name!r}")])
        seen.add(name)


def _plan_role(planner: _Planner, role: str, *, template: Mapping[str, Any], image: str, image_field: str,
               spark_container: str, where: str, harden: bool, pod_context: Mapping[str, Any] | None = None,
               container_context: Mapping[str, Any] | None = None,
               extras: Mapping[str, list[dict[str, Any]]] | None = None,
               ) -> tuple[dict[str, Any], dict[str, LaunchPlan], dict[str, list[dict[str, Any]]]]:
    """One role's pods: its pod template (the Spark container added when missing, its image set to the role's
    effective image, every other container pinned) and the SparkApplication's ``sidecars``/``initContainers``
    (*extras*), all under the restricted profile, with *pod_context* / *container_context* (the CRD's
    ``podSecurityContext`` / ``securityContext``, which the operator's webhook lays over the pod) laid over
    the template's first. Returns (template, {container: plan}, extras pinned)."""
    tmpl = copy.deepcopy(_dict(template, f"{where}.template"))
    spec = _dict(tmpl.get("spec"), f"{where}.template.spec")
    tmpl["spec"] = spec
    for field_name in CONTAINER_FIELDS:
        spec[field_name] = _list(spec.get(field_name), f"{where}.template.spec.{field_name}")
        _named(spec[field_name], f"{where}.template.spec.{field_name}")
        if not spec[field_name]:
            del spec[field_name]
    containers = spec.setdefault("containers", [])
    main = next((c for c in containers if c.get("name") == spark_container), None)
    if main is None:
        main = {"name": spark_container}
        containers.insert(0, main)
    if pod_context:
        spec["securityContext"] = copy.deepcopy(dict(pod_context))
    if container_context:
        main["securityContext"] = copy.deepcopy(dict(container_context))
    effective = planner.plan(image, where=image_field, user=pod_user(tmpl, spark_container))
    if main.get("image"):  # Spark replaces it with the role's image: it must not say something else
        named = planner.plan(main["image"], where=f"{where}.template.spec.containers[{spark_container}].image",
                             user=pod_user(tmpl, spark_container))
        if named.digest != effective.digest:
            raise SparkSpecError([(f"{where}.template.spec.containers[{spark_container}].image",
                                   f"names {main['image']!r}, but the {role} runs {image!r} ({effective.digest} vs "
                                   f"{named.digest}). Fix: remove the image from the template")])
    main["image"] = effective.launch
    if harden:
        tmpl = harden_pod(tmpl, planner.policy, uid=effective.uid, gid=effective.gid)
        spec = tmpl["spec"]
    images: dict[str, LaunchPlan] = {spark_container: effective}
    for field_name in CONTAINER_FIELDS:
        for container in spec.get(field_name) or ():
            name = container["name"]
            if name == spark_container:
                continue
            plan = planner.plan(container.get("image"), where=f"{where}.template.spec.{field_name}[{name}].image",
                                user=pod_user(tmpl, name))
            container["image"] = plan.launch
            container["imagePullPolicy"] = "IfNotPresent"
            images[name] = plan
    pinned_extras: dict[str, list[dict[str, Any]]] = {}
    given = {k: v for k, v in (extras or {}).items() if v}
    if given:
        # The webhook puts sidecars in containers and init containers in initContainers of the same pod,
        # under the pod's context: hardened as one pod with them.
        pod = {"spec": {"securityContext": spec.get("securityContext") or {},
                        "containers": copy.deepcopy(given.get("sidecars", [])),
                        "initContainers": copy.deepcopy(given.get("initContainers", []))}}
        if harden:
            pod = harden_pod(pod, planner.policy)
        for key, field_name in (("sidecars", "containers"), ("initContainers", "initContainers")):
            if key not in given:
                continue
            out = []
            for container in pod["spec"][field_name]:
                name = container["name"]
                if name in images:
                    raise SparkSpecError([(f"{where}.{key}[{name}]", f"a second container named {name!r} in the "
                                                                     f"{role} pod (the template has one)")])
                plan = planner.plan(container.get("image"), where=f"{where}.{key}[{name}].image", user=pod_user(pod, name))
                container["image"] = plan.launch
                container["imagePullPolicy"] = "IfNotPresent"
                images[name] = plan
                out.append(container)
            pinned_extras[key] = out
    return tmpl, images, pinned_extras


def _label(tmpl: dict[str, Any], images: Mapping[str, LaunchPlan], role: str, *, orchestrator: str | None,
           task: str | None, identity: TaskIdentity | None, launch_id: str | None) -> None:
    labels, annotations = pod_metadata(images[SPARK_CONTAINERS[role]] if SPARK_CONTAINERS[role] in images else None,
                                       images={n: str(p.pinned) for n, p in images.items()}, orchestrator=orchestrator,
                                       task=task, identity=identity, launch_id=launch_id)
    metadata = _dict(tmpl.get("metadata"), f"{role}.template.metadata")
    metadata["labels"] = {**_dict(metadata.get("labels"), "labels"), **labels}
    metadata["annotations"] = {**_dict(metadata.get("annotations"), "annotations"), **annotations}
    tmpl["metadata"] = metadata


# -- SparkApplication -------------------------------------------------------------------------------


@typed_errors
def plan_spark_application(
    application: Mapping[str, Any],
    *,
    policy: Policy | None = None,
    harden: bool = True,
    client: RegistryClient | None = None,
    today: dt.date | None = None,
    orchestrator: str | None = None,
    task: str | None = None,
    identity: TaskIdentity | None = None,
    launch_id: str | None = None,
) -> SparkPlan:
    """Gate every image of a kubeflow SparkApplication (a camelCase dict) and return the pinned, hardened copy.

    The driver's effective image is ``spec.driver.image``, else ``spec.image``, else the sparkConf's
    ``spark.kubernetes.driver.container.image``, else its ``spark.kubernetes.container.image`` (the
    operator's order); the executor's likewise. Both are written to ``spec.{driver,executor}.image`` and
    into the pod templates. Each image is checked as the user it runs as (a ``runAsUser`` given for it,
    else the image's ``USER``, which must be numeric and not root), and its numeric uid becomes the pods'
    ``runAsUser``.

    Raises:
        CheckFailed: an image is refused (``.role`` names its field).
        HardeningError: a role breaks the restricted profile (``hostNetwork``, ``privileged``, ``hostPath``…).
        SparkSpecError: a field names an image the gate does not know, ``sparkConfigMap`` is set, or a conf
            would reach around the gate (:func:`conf_problems`); or a role has no image at all.
    """
    policy = policy or Policy()
    _bounded(_dict(application, "SparkApplication"), "SparkApplication")
    app = copy.deepcopy(_dict(application, "SparkApplication"))
    spec = _dict(app.get("spec"), "spec")
    app["spec"] = spec
    shape = list(_shape_problems(spec, "spec"))
    if shape:
        raise SparkSpecError(shape)
    problems = [(path, "imagegate does not know this image field, so it cannot check what it names. Fix: name the "
                       "image in spec.image, spec.driver/executor.image, sidecars, initContainers or the pod templates")
                for path in _image_keys(spec, "spec") if not _KNOWN_IMAGE_PATHS.match(path)]
    conf = {str(k): v for k, v in _dict(spec.get("sparkConf"), "spec.sparkConf").items()}
    problems += conf_problems(conf, where="spec.sparkConf", template_files=False)
    if spec.get("sparkConfigMap"):
        problems.append(("spec.sparkConfigMap", "a ConfigMap's spark-defaults.conf and spark-env.sh can set images and "
                                                "java options the gate never sees. Fix: put the settings in "
                                                "spec.sparkConf"))
    problems += _role_confs(spec)
    problems += _pod_problems({k: v for k, v in spec.items() if k != "sparkConf"}, "spec")
    problems += _gate_metadata(app.get("metadata"), "metadata")
    if problems:
        raise SparkSpecError(_unique(problems))
    if harden:  # what the webhook lays over every pod: hostNetwork per role, the application's volumes
        bad = restricted_violations({"spec": {"volumes": _list(spec.get("volumes"), "spec.volumes")}})
        bad += [f"spec.{role}.hostNetwork must be unset or false" for role in ROLES
                if _dict(spec.get(role), f"spec.{role}").get("hostNetwork")]
        # the operator puts each role's annotations on its pods (an AppArmor or seccomp annotation confines them)
        bad += [f"spec.{role}.annotations: {problem}" for role in ROLES for problem in restricted_violations(
            {"metadata": {"annotations": _dict(_dict(spec.get(role), f"spec.{role}").get("annotations"),
                                               f"spec.{role}.annotations")}})]
        bad += _annotation_conf_violations(conf, "spec.sparkConf")
        if bad:
            raise HardeningError(bad, runtime="kubernetes")
    planner = _Planner(policy, client, today)
    if spec.get("image"):
        spec["image"] = planner.plan(spec["image"], where="spec.image").launch
    for key in sorted(IMAGE_CONFS & set(conf)):
        conf[key] = planner.plan(conf[key], where=f"spec.sparkConf[{key!r}]").launch
    if conf:
        spec["sparkConf"] = conf
    images: dict[str, dict[str, LaunchPlan]] = {}
    templates: dict[str, dict[str, Any]] = {}
    for role in ROLES:
        section = _dict(spec.get(role), f"spec.{role}")
        original = _dict(application.get("spec"), "spec")
        given = _dict(original.get(role), f"spec.{role}")
        image, image_field = next(
            ((value, where) for value, where in (
                (given.get("image"), f"spec.{role}.image"), (original.get("image"), "spec.image"),
                (_dict(original.get("sparkConf"), "").get(ROLE_IMAGE_CONF[role]), f"spec.sparkConf[{ROLE_IMAGE_CONF[role]!r}]"),
                (_dict(original.get("sparkConf"), "").get(IMAGE_CONF), f"spec.sparkConf[{IMAGE_CONF!r}]"),
            ) if value), (None, f"spec.{role}.image"))
        if image is None:
            raise SparkSpecError([(f"spec.{role}.image", f"the {role} has no image (spec.image, spec.{role}.image or "
                                                         f"{IMAGE_CONF}). Fix: name one")])
        extras = {key: _list(section.get(key), f"spec.{role}.{key}") for key in ("sidecars", "initContainers")}
        for key, items in extras.items():
            _named(items, f"spec.{role}.{key}")
        tmpl, role_images, pinned = _plan_role(
            planner, role, template=_dict(section.get("template"), f"spec.{role}.template"), image=image,
            image_field=image_field, spark_container=SPARK_CONTAINERS[role], where=f"spec.{role}", harden=harden,
            pod_context=_dict(section.get("podSecurityContext"), f"spec.{role}.podSecurityContext") or None,
            container_context=_dict(section.get("securityContext"), f"spec.{role}.securityContext") or None,
            extras=extras,
        )
        _label(tmpl, role_images, role, orchestrator=orchestrator, task=task, identity=identity, launch_id=launch_id)
        section["image"] = role_images[SPARK_CONTAINERS[role]].launch
        section["template"] = tmpl
        if role == "executor":  # kept for the read-back; they go with the driver pod (user input was checked above)
            section["deleteOnTermination"] = False
        section.update(pinned)
        if harden:
            section["podSecurityContext"] = copy.deepcopy(tmpl["spec"]["securityContext"])
            main = next(c for c in tmpl["spec"]["containers"] if c["name"] == SPARK_CONTAINERS[role])
            section["securityContext"] = copy.deepcopy(main["securityContext"])
        spec[role] = section
        images[role] = role_images
        templates[role] = tmpl
    metadata = _dict(app.get("metadata"), "metadata")
    labels, annotations = pod_metadata(images["driver"][SPARK_CONTAINERS["driver"]], images={
        f"{role}/{name}": str(p.pinned) for role, plans in images.items() for name, p in plans.items()},
        orchestrator=orchestrator, task=task, identity=identity, launch_id=launch_id)
    metadata["labels"] = {**_dict(metadata.get("labels"), "metadata.labels"), **labels}
    metadata["annotations"] = {**_dict(metadata.get("annotations"), "metadata.annotations"), **annotations}
    app["metadata"] = metadata
    leftover = [p for p in _image_strings(app) if not _is_pinned(p[1])]
    if leftover:  # the walk above must have pinned every image field; anything else is a bug: refuse
        raise SparkSpecError([(where, f"{value!r} is not pinned") for where, value in leftover])
    return SparkPlan(images=images, plans=dict(planner.plans), templates=templates, application=app, harden=harden,
                     launch_id=launch_id)


def _bounded(value: Any, where: str) -> None:
    """Refuse *value* when it has more than :data:`MAX_NODES` values (each reference to a shared one counted, as a
    serialiser writes it out) or nests deeper than :data:`MAX_DEPTH` (a cycle does). An iterative walk: the
    recursive ones that follow must never meet what would exhaust Python's stack or the CPU."""
    stack: list[tuple[Any, int, str]] = [(value, 0, where)]
    count = 0
    while stack:
        node, depth, path = stack.pop()
        count += 1
        if count > MAX_NODES:
            raise SparkSpecError([(where, f"it holds more than {MAX_NODES} values (shared lists or maps are counted "
                                          "once per reference, as the API server receives them). Fix: write a smaller "
                                          "spec; a YAML alias repeated in nested lists multiplies it")])
        if depth > MAX_DEPTH:
            raise SparkSpecError([(path, f"nested more than {MAX_DEPTH} levels deep (does it contain itself?). "
                                         "Fix: flatten it")])
        if isinstance(node, Mapping):
            stack.extend((child, depth + 1, f"{path}.{key}") for key, child in node.items())
        elif isinstance(node, (list, tuple)):
            stack.extend((child, depth + 1, f"{path}[{index}]") for index, child in enumerate(node))


def _image_strings(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every (path, value) of an image field, and of an image conf, anywhere in *value*."""
    if isinstance(value, Mapping):
        for key, child in value.items():
            key = str(key)
            here = f"{path}.{key}" if path else key
            if ("image" in key.lower() and key not in _IMAGE_KEY_OK and key not in _NOT_IMAGES
                    and child is not None and not isinstance(child, (Mapping, list))):
                yield here, child
            if key not in _FREE_FORM:
                yield from _image_strings(child, here)
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _image_strings(child, f"{path}[{index}]")


def _smuggled(value: Any, path: str) -> Iterator[tuple[str, str]]:
    """(path, setting) of every string value that embeds a Spark Kubernetes image, template or feature-steps
    setting (``-Dspark.kubernetes.executor.container.image=…`` in java options or an environment variable)."""
    if isinstance(value, Mapping):
        for key, child in value.items():
            yield from _smuggled(child, f"{path}.{key}")
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _smuggled(child, f"{path}[{index}]")
    elif isinstance(value, str):
        found = _SMUGGLED.search(_unquoted(value))
        if found:
            yield path, found.group(0)


def _pod_problems(value: Any, path: str) -> list[tuple[str, str]]:
    """What in a pod template or a SparkApplication's spec (without ``sparkConf``) reaches around the gate: a string
    that embeds a Kubernetes image, template or volume setting (:func:`_smuggled`), an environment the JVM reads
    as options (:func:`_env_problems`), and a label or annotation under ``imagegate.dev/``."""
    found = [(where, f"the value sets {setting!r} where the gate cannot read it (a -D java option, an environment "
                     "variable?). Fix: give image, template and volume settings as conf entries of their own "
                     "(spec.sparkConf, --conf), which the gate checks") for where, setting in _smuggled(value, path)]
    return _unique([*found, *_env_problems(value, path), *_gate_metadata(value, path)])


_ANNOTATION_CONF = re.compile(r"^spark\.kubernetes\.(driver|executor)\.annotation\.(.+)$")


def _annotation_conf_violations(conf: Mapping[str, Any], where: str) -> list[str]:
    """What the restricted profile says of the pod annotations the confs ``spark.kubernetes.{driver,executor}
    .annotation.NAME`` put on the pods (AppArmor ``unconfined``, a seccomp annotation…)."""
    bad = []
    for key, value in conf.items():
        found = _ANNOTATION_CONF.match(str(key))
        if found:
            bad += [f"{where}[{str(key)!r}]: {problem}"
                    for problem in restricted_violations({"metadata": {"annotations": {found.group(2): str(value)}}})]
    return bad


def _env_problems(value: Any, path: str) -> Iterator[tuple[str, str]]:
    """Every container environment the JVM reads as options (:data:`JVM_OPTION_ENV`): an ``env`` value gets
    :func:`java_option_problems`; a ``valueFrom`` for one of those names, an ``envSecretKeyRefs`` entry (the CRD's),
    or an ``envFrom`` whose ``prefix`` could make one of them (a ConfigMap's keys are not known to the gate) is
    refused."""
    if isinstance(value, Mapping):
        for key, child in value.items():
            here = f"{path}.{key}"
            if key == "env" and isinstance(child, list):
                for index, item in enumerate(child):
                    if isinstance(item, Mapping) and item.get("name") in CONF_DIR_ENV:
                        yield (f"{here}[{index}]", _CONF_DIR_WHY)
                    if isinstance(item, Mapping) and item.get("name") in JVM_OPTION_ENV:
                        if item.get("valueFrom") is not None:
                            yield (f"{here}[{index}].valueFrom", f"{item['name']} is read from a ConfigMap or Secret the "
                                   "gate cannot see, and the JVM reads it as options (-Dspark.… sets a conf). Fix: give "
                                   "its value inline")
                        if isinstance(item.get("value"), str):
                            yield from java_option_problems(item["value"], where=f"{here}[{index}].value")
            elif key == "envFrom" and isinstance(child, list):
                for index, item in enumerate(child):
                    prefix = str(item.get("prefix") or "") if isinstance(item, Mapping) else ""
                    if any(name.startswith(prefix) for name in JVM_OPTION_ENV | CONF_DIR_ENV):
                        yield (f"{here}[{index}]", "envFrom sets every key of a ConfigMap or Secret the gate cannot see, "
                               f"which may be one the JVM reads as options ({', '.join(sorted(JVM_OPTION_ENV))}). Fix: "
                               "list the variables under env, or give envFrom a prefix such as APP_")
            elif key == "envSecretKeyRefs" and isinstance(child, Mapping):
                for name in child:
                    if name in JVM_OPTION_ENV | CONF_DIR_ENV:
                        yield (f"{here}[{name!r}]", f"{name} is read from a Secret the gate cannot see, and the JVM reads "
                               "it as options. Fix: give its value in envVars")
            yield from _env_problems(child, here)
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _env_problems(child, f"{path}[{index}]")


_METADATA_MAPS = frozenset({"labels", "annotations", "serviceLabels", "serviceAnnotations"})


def _gate_metadata(value: Any, path: str) -> Iterator[tuple[str, str]]:
    """Every user label or annotation under ``imagegate.dev/`` (the gate's own), in any ``labels``/``annotations``."""
    if isinstance(value, Mapping):
        for key, child in value.items():
            here = f"{path}.{key}"
            if key in _METADATA_MAPS and isinstance(child, Mapping):
                yield from ((f"{here}[{name!r}]", _GATE_METADATA_WHY) for name in child
                            if str(name).lower().startswith(GATE_PREFIX))
            else:
                yield from _gate_metadata(child, here)
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _gate_metadata(child, f"{path}[{index}]")


def _role_confs(spec: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The confs the spark-operator makes of each role's ``envVars``, ``javaOptions`` and ``deleteOnTermination``
    (``spark.kubernetes.driverEnv.NAME``, ``spark.executorEnv.NAME``, ``spark.{role}.extraJavaOptions``…), checked
    as conf entries (:func:`conf_problems`) under the field that names them."""
    problems: list[tuple[str, str]] = []
    env_conf = {"driver": "spark.kubernetes.driverEnv", "executor": "spark.executorEnv"}
    for role in ROLES:
        section = spec.get(role)
        if not isinstance(section, Mapping):
            continue
        where = f"spec.{role}"
        entries = [(f"{env_conf[role]}.{name}", value, f"{where}.envVars[{str(name)!r}]")
                   for name, value in _dict(section.get("envVars"), f"{where}.envVars").items()]
        if section.get("javaOptions") is not None:
            entries.append((f"spark.{role}.extraJavaOptions", section["javaOptions"], f"{where}.javaOptions"))
        if role == "executor" and section.get("deleteOnTermination") is not None:
            entries.append((DELETE_ON_TERMINATION, section["deleteOnTermination"], f"{where}.deleteOnTermination"))
        for key, value, at in entries:
            problems += _conf_entry_problems(key, value, at=at, template_files=False)
    return problems


_TEMPLATE_IMAGE_PATHS = re.compile(r"^\.spec\.(containers|initContainers|ephemeralContainers)\[\d+\]\.image$")


def _template_image_fields(template: Mapping[str, Any], where: str) -> list[tuple[str, str]]:
    """A pod template file's image fields other than its containers' ``image`` (``volumes[].image.reference``, a
    newer field…): refused whether or not the template is hardened."""
    return [(f"{where}{path}", "imagegate does not know this image field, so it cannot check what it names. Fix: "
                               "name images only in the containers' image fields")
            for path in _image_keys(template, "") if not _TEMPLATE_IMAGE_PATHS.match(path)]


#: Fields of a pod or SparkApplication that are objects, or lists of objects, wherever they appear; the gate reads
#: into them, so a string there is refused (the API server would refuse it too) rather than crash the walk.
_OBJECT_FIELDS = frozenset({
    "metadata", "spec", "template", "securityContext", "podSecurityContext", "seccompProfile", "seLinuxOptions",
    "appArmorProfile", "windowsOptions", "capabilities", "resources", "livenessProbe", "readinessProbe",
    "startupProbe", "lifecycle", "postStart", "preStop", "httpGet", "tcpSocket", "grpc", "exec", "labels",
    "annotations", "sparkConf", "hadoopConf", "envVars", "nodeSelector"})
_OBJECT_LIST_FIELDS = frozenset({"containers", "initContainers", "ephemeralContainers", "sidecars", "volumes",
                                 "volumeMounts", "env", "envFrom", "ports", "sysctls"})
_LIST_FIELDS = frozenset({"drop", "add"})


def _shape_problems(value: Any, path: str) -> Iterator[tuple[str, str]]:
    """Every object field (:data:`_OBJECT_FIELDS`) that is no mapping, and list field that is no list (of
    mappings), in *value*; free-form maps (labels, confs) are not entered."""
    if isinstance(value, Mapping):
        for key, child in value.items():
            here = f"{path}.{key}"
            if child is None:
                continue
            if key in _OBJECT_FIELDS and not isinstance(child, Mapping):
                yield here, f"must be a mapping, not {type(child).__name__}. Fix: write it as an object"
            elif key in _OBJECT_LIST_FIELDS and not (isinstance(child, list)
                                                    and all(isinstance(item, Mapping) for item in child)):
                yield here, "must be a list of mappings. Fix: write it as a list of objects"
            elif key in _LIST_FIELDS and not isinstance(child, list):
                yield here, f"must be a list, not {type(child).__name__}. Fix: write it as a list"
            elif key not in _FREE_FORM and key != "sparkConf":
                yield from _shape_problems(child, here)
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _shape_problems(child, f"{path}[{index}]")


def _is_pinned(value: Any) -> bool:
    return isinstance(value, str) and re.fullmatch(r"[^@\s]+@sha256:[0-9a-f]{64}", value) is not None


# -- spark-submit -----------------------------------------------------------------------------------


@typed_errors
def pin_spark_conf(
    conf: Mapping[str, Any],
    *,
    policy: Policy | None = None,
    harden: bool = True,
    out_dir: str | os.PathLike[str] | None = None,
    client: RegistryClient | None = None,
    today: dt.date | None = None,
    orchestrator: str | None = None,
    task: str | None = None,
    identity: TaskIdentity | None = None,
    launch_id: str | None = None,
    properties_files: Iterable[str | os.PathLike[str]] = (),
) -> PinnedSparkConf:
    """A spark-submit ``--master k8s://…`` conf with every Kubernetes image conf pinned and checked, and
    restricted pod templates for the driver and the executor.

    The driver's image is ``spark.kubernetes.driver.container.image``, else ``spark.kubernetes.container.image``
    (Spark's order); the executor's likewise. Both are written explicitly, and the pod template files
    (``spark.kubernetes.{driver,executor}.podTemplateFile``, read when given: JSON or YAML, at most 1 MiB,
    duplicate keys refused) are written anew under *out_dir* (default: a new private temporary directory)
    with every image pinned and the restricted context applied, and named in the conf with their
    ``podTemplateContainerName``. ``spark.kubernetes.executor.deleteOnTermination`` is written ``false`` (the
    executors are read back after the job; ``true`` is refused). *properties_files* (``--properties-file``, the
    ``spark-defaults.conf`` spark-submit would read; at most 4 MiB) are read as java.util.Properties reads them and
    must not set any Kubernetes image or template conf, nor anything :func:`conf_problems` refuses
    (:func:`properties_problems`).

    Raises:
        CheckFailed: an image is refused (``.role`` names its conf or template field).
        HardeningError: a template breaks the restricted profile.
        SparkSpecError: an image conf the gate does not know (:func:`conf_problems`), no image for a role,
            or a template file that cannot be read.
    """
    policy = policy or Policy()
    given = {str(k): v for k, v in conf.items()}
    problems = conf_problems(given, where="conf", template_files=True)
    annotations: list[str] = []  # what the restricted profile says of the annotations the confs put on the pods
    for path in properties_files:
        try:
            with Path(path).open("rb") as handle:
                data = handle.read(MAX_PROPERTIES_BYTES + 1)
        except OSError as exc:
            problems.append((str(path), f"cannot read the properties file: {exc.strerror or exc}"))
            continue
        if len(data) > MAX_PROPERTIES_BYTES:  # what is past a cut would go unread: refused whole
            problems.append((str(path), f"the properties file is larger than {MAX_PROPERTIES_BYTES} bytes. Fix: give "
                                        "the settings as conf entries"))
            continue
        text = data.decode("utf-8", "replace")
        found = properties_problems(text, where=str(path))
        problems += found
        if harden and not found:
            annotations.extend(_annotation_conf_violations(dict(read_properties(text)), str(path)))
    if problems:
        raise SparkSpecError(problems)
    if harden:
        annotations.extend(_annotation_conf_violations(given, "conf"))
        if annotations:
            raise HardeningError(annotations, runtime="kubernetes")
    planner = _Planner(policy, client, today)
    out = {key: str(value) for key, value in given.items()}
    for key in sorted(IMAGE_CONFS & set(given)):
        out[key] = planner.plan(given[key], where=key).launch
    images: dict[str, dict[str, LaunchPlan]] = {}
    templates: dict[str, dict[str, Any]] = {}
    files: dict[str, Path] = {}
    for role in ROLES:
        key = ROLE_IMAGE_CONF[role] if given.get(ROLE_IMAGE_CONF[role]) else IMAGE_CONF
        if not given.get(key):
            raise SparkSpecError([(ROLE_IMAGE_CONF[role], f"the {role} has no image. Fix: set {IMAGE_CONF} (or "
                                                          f"{ROLE_IMAGE_CONF[role]}) to the job's image")])
        template: dict[str, Any] = {}
        if given.get(TEMPLATE_FILE_CONF[role]):
            template = read_pod_template(given[TEMPLATE_FILE_CONF[role]], where=TEMPLATE_FILE_CONF[role])
            hidden = [*_pod_problems(template, TEMPLATE_FILE_CONF[role]),
                      *_template_image_fields(template, TEMPLATE_FILE_CONF[role])]
            if hidden:
                raise SparkSpecError(hidden)
        spark_container = str(given.get(TEMPLATE_CONTAINER_CONF[role]) or "")
        if not spark_container:  # Spark takes the template's first container when none is named
            first = (_dict(template.get("spec"), "spec").get("containers") or [{}])[0]
            spark_container = first.get("name") if isinstance(first, Mapping) and first.get("name") else SPARK_CONTAINERS[role]
        tmpl, role_images, _ = _plan_role(planner, role, template=template, image=given[key], image_field=key,
                                          spark_container=spark_container, where=TEMPLATE_FILE_CONF[role], harden=harden)
        if spark_container != SPARK_CONTAINERS[role]:  # SparkPlan finds the role's image by the standard name
            role_images = {SPARK_CONTAINERS[role]: role_images[spark_container], **role_images}
        _label(tmpl, role_images, role, orchestrator=orchestrator, task=task, identity=identity, launch_id=launch_id)
        tmpl.setdefault("apiVersion", "v1")
        tmpl.setdefault("kind", "Pod")
        out[ROLE_IMAGE_CONF[role]] = role_images[spark_container].launch
        out[TEMPLATE_CONTAINER_CONF[role]] = spark_container
        images[role] = role_images
        templates[role] = tmpl
    out[DELETE_ON_TERMINATION] = "false"  # kept for the read-back; they go with the driver pod (a "true" was refused)
    directory = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="imagegate-spark-"))
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    for role, tmpl in templates.items():  # written only once both roles passed
        path = directory / f"{role}-pod-template.json"
        path.write_text(json.dumps(tmpl, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        files[role] = path
        out[TEMPLATE_FILE_CONF[role]] = str(path)
    plan = SparkPlan(images=images, plans=dict(planner.plans), templates=templates, harden=harden, launch_id=launch_id)
    return PinnedSparkConf(conf=out, files=files, plan=plan)


def read_pod_template(path: str | os.PathLike[str], *, where: str) -> dict[str, Any]:
    """A pod template file (JSON, or YAML when PyYAML is installed): a mapping, at most 1 MiB, no duplicate keys
    (a YAML or JSON reader elsewhere may keep the other one)."""
    file = Path(path)
    try:
        with file.open("rb") as handle:
            data = handle.read(MAX_TEMPLATE_BYTES + 1)
    except OSError as exc:
        raise SparkSpecError([(where, f"cannot read the pod template {str(file)!r}: {exc.strerror or exc}")]) from exc
    if len(data) > MAX_TEMPLATE_BYTES:
        raise SparkSpecError([(where, f"the pod template {str(file)!r} is larger than {MAX_TEMPLATE_BYTES} bytes")])
    text = data.decode("utf-8", "replace")
    try:
        value = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_not_json)
    except RecursionError as exc:
        raise SparkSpecError([(where, f"the pod template {str(file)!r} nests deeper than Python can read")]) from exc
    except ValueError as exc:
        if isinstance(exc, _Refused):
            raise SparkSpecError([(where, str(exc))]) from exc
        value = _load_yaml(text, where)
    _bounded(value, where)
    if not isinstance(value, dict):
        raise SparkSpecError([(where, f"the pod template {str(file)!r} is not a mapping (a Pod)")])
    kind = value.get("kind")
    if kind not in (None, "Pod"):
        raise SparkSpecError([(where, f"the pod template is a {kind!r}, not a Pod")])
    shape = list(_shape_problems(value, where))
    if shape:
        raise SparkSpecError(shape)
    return value


def _not_json(constant: str) -> Any:
    """``NaN`` and ``Infinity``, which Python's reader takes and no JSON reader of the runtime does: refused."""
    raise _Refused(f"{constant} is not a JSON number")


class _Refused(ValueError):
    """A JSON template the gate refuses outright (a duplicate key, NaN), not one to try as YAML."""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _Refused(f"the key {key!r} appears twice")
        out[key] = value
    return out


def _load_yaml(text: str, where: str) -> Any:
    try:
        import yaml  # PyYAML: optional, present with the Kubernetes client
    except ImportError as exc:
        raise SparkSpecError([(where, "the pod template is not JSON, and PyYAML is not installed to read YAML. "
                                      "Fix: give it as JSON, or pip install pyyaml")]) from exc

    class Loader(yaml.SafeLoader):
        def compose_node(self, parent: Any, index: Any) -> Any:
            # An alias shares one node many times: a 1 KiB "billion laughs" template expands to gigabytes when the
            # walker reads it or the pinned template is written out. The runtime's reader (fabric8's SnakeYAML)
            # caps aliases too; a pod template has no need of them: refused.
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                raise SparkSpecError([(where, f"the pod template uses a YAML alias (*{event.anchor}) at line "
                                              f"{event.start_mark.line + 1}; write it out in full (aliases are refused)")])
            return super().compose_node(parent, index)

    # Only what JSON can hold, as the runtime's readers see it: an unquoted date stays a string (Jackson's YAML
    # reader, fabric8's, reads it so), and a tag JSON has no type for (!!binary, !!set, !!omap…) is refused, as is
    # a key that is not a string; json.dumps of the pinned template must never meet them.
    Loader.yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}

    def mapping(loader: Any, node: Any) -> dict[Any, Any]:
        loader.flatten_mapping(node)
        pairs = loader.construct_pairs(node, deep=True)
        bad = next((key for key, _ in pairs if not isinstance(key, str)), None)
        if bad is not None or any(key is None for key, _ in pairs):
            raise SparkSpecError([(where, f"the key {bad!r} at line {node.start_mark.line + 1} is not a string (YAML "
                                          "reads yes, on, 1 or null unquoted as other types). Fix: quote it")])
        try:
            return _no_duplicates(pairs)
        except _Refused as exc:
            raise SparkSpecError([(where, str(exc))]) from exc

    def not_json(loader: Any, node: Any) -> Any:
        raise SparkSpecError([(where, f"the pod template uses the YAML tag {node.tag} at line {node.start_mark.line + 1}, "
                                      "which has no JSON form. Fix: write the value as a quoted string")])

    def number(loader: Any, node: Any) -> Any:
        value = yaml.SafeLoader.construct_yaml_float(loader, node)
        if value != value or value in (float("inf"), float("-inf")):
            not_json(loader, node)
        return value

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    Loader.add_constructor("tag:yaml.org,2002:float", number)
    for tag in ("binary", "set", "omap", "pairs", "timestamp"):
        Loader.add_constructor(f"tag:yaml.org,2002:{tag}", not_json)
    try:
        return yaml.load(text, Loader=Loader)  # noqa: S506 - a SafeLoader subclass
    except RecursionError as exc:
        raise SparkSpecError([(where, "the pod template nests deeper than Python can read")]) from exc
    except yaml.YAMLError as exc:
        raise SparkSpecError([(where, f"the pod template is neither JSON nor YAML: {exc}")]) from exc
