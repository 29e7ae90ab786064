"""One hardening rule set for Docker and Kubernetes, chosen once. Mappings in, mappings out; pure but for
the host-path rule, which resolves a bind source on this host as the engine does (symlinks followed).

Both runtimes get the same promises, each in its own vocabulary:

==========================  ===================================  ============================================
promise                     Docker (create / host-config kwargs)  Kubernetes (every container of the pod)
==========================  ===================================  ============================================
no privilege escalation     ``security_opt: no-new-privileges``  ``allowPrivilegeEscalation: false``
no capabilities             ``cap_drop: [ALL]``                  ``capabilities.drop: [ALL]``
added capabilities          refused unless the policy lists      refused unless the policy lists them, and
                            them (``allowed-capabilities``)      then only ``NET_BIND_SERVICE`` (restricted)
no privileged mode          ``privileged`` refused                ``privileged`` refused
no host namespaces          ``pid``/``ipc``/``uts``/``userns``    ``hostPID``/``hostIPC``/``hostNetwork``
                            ``_mode = host`` refused, and         refused
                            ``pid``/``ipc_mode = container:…``
                            (another container's: whatever it
                            has); ``cgroupns`` ``private`` (set
                            when unset); ``device_cgroup_rules``
                            refused
confinement kept            ``seccomp``: the engine's default     ``seccompProfile: RuntimeDefault`` (or
                            profile only (unset or ``builtin``);  ``Localhost``)
                            ``unconfined`` or a profile of the
                            launch's own refused;
                            ``apparmor=unconfined``,
                            ``label=disable``, an SELinux type
                            but ``container_t``/``_init_t``/
                            ``_kvm_t``, a ``user``/``role``/
                            ``filetype``, ``writable-cgroups``
                            refused; the engine's record must
                            keep its masked and read-only paths
no host paths that give     binds, mounts, volumes and devices    no ``hostPath`` volume at all (only the
away the host               of the engine's socket, ``/``,        restricted profile's volume types)
                            ``/etc``, ``/proc``, … refused unless
                            the policy lists them
                            (``allowed-host-paths``); a mount
                            of a type but bind, volume, tmpfs,
                            and volume driver options refused
non-root user               the checked user (``non-root``)       ``runAsNonRoot: true``, ``runAsUser`` the
                                                                  image's numeric uid when unset
the baseline's other rules  — (see confinement kept)             refused: an SELinux type other than
                                                                  ``container_t``/``_init_t``/``_kvm_t`` or a
                                                                  user/role, a ``procMount`` other than
                                                                  ``Default``, an AppArmor profile other than
                                                                  RuntimeDefault/Localhost (field or
                                                                  annotation), a seccomp annotation other than
                                                                  runtime/default or localhost/*, an unsafe
                                                                  sysctl, ``hostProcess``, a probe's ``host``
==========================  ===================================  ============================================

After the engine created a Docker container, :func:`docker_violations` and :func:`mount_violations`
read the same rules back from its record (``docker inspect``): the record, not the request, decides.
A named volume's own options are not in that record: :func:`volume_violations` judges its
``docker volume inspect`` record (one call per named volume the container mounts).

A value the user set is kept when it satisfies the rules and refused, naming its field and the
fix, when it does not: nothing the user wrote is silently replaced, and nothing weaker is launched.
``network_mode="host"`` stays allowed on Docker (a laptop reaching a local database), and so does
``container:ID`` (that container's network: at most the host's); Kubernetes' restricted profile refuses
``hostNetwork``.
"""

from __future__ import annotations

import copy
import os
import re
import stat
from typing import Any, Iterable, Mapping

from imagegate._errors import ImagegateError
from imagegate._policy import Policy

NO_NEW_PRIVILEGES = "no-new-privileges:true"
RUNTIME_DEFAULT = {"type": "RuntimeDefault"}
#: check_restrictedVolumes.go; 1.31 adds ``image``, left out here (see :data:`PSA_SOURCE`).
ALLOWED_VOLUME_TYPES = frozenset(
    {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"}
)
ALLOWED_SECCOMP = frozenset({"RuntimeDefault", "Localhost"})
RESTRICTED_ADDABLE = frozenset({"NET_BIND_SERVICE"})
CONTAINER_FIELDS = ("initContainers", "containers", "ephemeralContainers")
#: Where the Kubernetes rules below come from: pod-security-admission's checks, read at this commit, which holds
#: every release's version of each rule. Each allowed list is the narrowest any release from 1.28 (the test
#: cluster's) to 1.37 accepts, and each rule added since (probe hosts, 1.34) applies: never looser than one of them.
PSA_SOURCE = "k8s.io/pod-security-admission/policy/check_*.go, kubernetes/pod-security-admission 8f84a87 (v0.37.0-alpha)"
#: check_seLinuxOptions.go: "", container_t, container_init_t, container_kvm_t; 1.31 adds container_engine_t,
#: left out here so that no release from 1.28 on is looser than imagegate.
SELINUX_TYPES = frozenset({"", "container_t", "container_init_t", "container_kvm_t"})
#: check_sysctls.go: the safe sysctls of 1.27 and 1.28 (1.0 had the first five; 1.27 added
#: ip_local_reserved_ports). Later releases allow more — 1.29 tcp_keepalive_time, tcp_fin_timeout,
#: tcp_keepalive_intvl, tcp_keepalive_probes; 1.32 tcp_rmem, tcp_wmem; 1.37 tcp_slow_start_after_idle,
#: tcp_notsent_lowat — left out here so that no release from 1.28 on is looser than imagegate.
SAFE_SYSCTLS = frozenset({
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.ip_local_reserved_ports",
})
ALLOWED_APPARMOR = frozenset({"RuntimeDefault", "Localhost"})  # check_appArmorProfile.go
APPARMOR_ANNOTATION = "container.apparmor.security.beta.kubernetes.io/"  # + container name
SECCOMP_POD_ANNOTATION = "seccomp.security.alpha.kubernetes.io/pod"  # check_seccompProfile_baseline.go (1.0)
SECCOMP_CONTAINER_ANNOTATION = "container.seccomp.security.alpha.kubernetes.io/"  # + container name
_PROBES = ("livenessProbe", "readinessProbe", "startupProbe")
# spec.hostUsers has no rule: false (a user namespace) only relaxes procMount, runAsNonRoot and runAsUser from
# 1.35, a relaxation not taken here; true is the default.
_WEAKENING_OPTS = ("seccomp=unconfined", "seccomp:unconfined", "apparmor=unconfined", "apparmor:unconfined",
                   "label=disable", "label:disable", "systempaths=unconfined")
_NAMESPACE_OPTIONS = ("pid_mode", "ipc_mode", "uts_mode", "userns_mode")
_NAMESPACE_FIELDS = ("PidMode", "IpcMode", "UTSMode", "UsernsMode")  # the same, as the engine records them
#: The mount types judged here (moby's api/types/mount: bind, volume, tmpfs, npipe, cluster, image). An ``image``
#: mount (Engine 28+) puts an image imagegate never checked in the container; the others are not Linux's.
MOUNT_TYPES = frozenset({"bind", "volume", "tmpfs"})
#: The seccomp values for which moby applies its own default profile (daemon/seccomp_linux.go: unset, or
#: ``builtin``); it loads every other value but ``unconfined`` as a JSON profile, which may allow every syscall.
DEFAULT_SECCOMP = frozenset({"builtin"})
#: Keys of the local volume driver (moby's volume/local) that mount what they name: ``device`` with ``o=bind``
#: binds a host path (a relative one from the engine's working directory, ``/``), ``type=proc``/``overlay``/…
#: mount that filesystem.
LOCAL_MOUNT_OPTIONS = frozenset({"type", "o", "device"})
#: Paths the engine masks and makes read-only in every unprivileged container (daemon/pkg/oci/defaults.go; in
#: every release's defaults since 1.13, recorded in ``HostConfig`` since API 1.37). A record that lists paths
#: without these had ``systempaths=unconfined`` or the API's ``MaskedPaths``/``ReadonlyPaths`` set by hand.
_MASKED_PATHS = ("/proc/kcore", "/proc/keys", "/sys/firmware")
_READONLY_PATHS = ("/proc/sys", "/proc/sysrq-trigger")
_GO_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})  # Go's strconv.ParseBool, which the engine uses
_GO_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})
_VOLUME_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+")  # the local volume driver's name grammar


class HardeningError(ImagegateError, ValueError):
    """A launch that would weaken the hardening. ``problems`` names each field.

    Without ``container`` it was refused before anything was created; with it, the runtime's record
    of the created container ``container`` breaks the rules, and that container was removed unstarted.
    """

    _fields = ("problems", "runtime", "container")

    def __init__(self, problems: Iterable[str], *, runtime: str, container: str | None = None) -> None:
        self.problems = tuple(problems)
        self.runtime = runtime
        self.container = container
        what = "the restricted Pod Security Standard" if runtime == "kubernetes" else "imagegate's Docker hardening"
        if container:
            message = (
                f"the engine created container {container[:12]} breaking {what}: " + "; ".join(self.problems)
                + ". It was removed without starting. Something changed the launch after imagegate hardened it "
                "(a subclass, a wrapper around the engine client, an engine plugin): remove that"
            )
        elif all("Fix:" in problem for problem in self.problems):  # each names its own fix
            message = f"the launch breaks {what} (nothing was created): " + "; ".join(self.problems)
        else:
            message = (
                f"the launch breaks {what} (nothing was created): " + "; ".join(self.problems)
                + ". Fix: remove the option that weakens it (or, for a capability or a host path, list it under "
                "allowed-capabilities or allowed-host-paths in the policy)"
            )
        super().__init__(message)


def capability(name: str) -> str:
    """``cap_net_admin`` / ``CAP_NET_ADMIN`` / ``NET_ADMIN`` -> ``NET_ADMIN``."""
    return str(name).strip().upper().removeprefix("CAP_")


# -- Docker -------------------------------------------------------------------------------------------


def harden_docker(options: Mapping[str, Any] | None, policy: Policy) -> dict[str, Any]:
    """Docker create / host-config keyword arguments (the docker SDK's names) with the hardening merged in.

    Bind mounts (``mounts``, ``binds``, ``volumes``) and ``devices`` are checked against the host-path
    rule (:func:`host_path_problem`); they are passed on as given. ``cgroupns`` is set ``private`` when
    unset: the engine's default on a cgroup v1 host is the host's, and its record must show the hardening.

    Raises:
        HardeningError: naming each option that would weaken it.
    """
    kwargs = dict(options or {})
    problems: list[str] = []
    if kwargs.get("privileged"):
        problems.append("privileged=True undoes every other protection; add the one capability the job needs instead")
    for mode in _NAMESPACE_OPTIONS:
        shared = _shared_namespace(kwargs.get(mode), mode)
        if shared:
            problems.append(f"{mode}={kwargs[mode]!r} shares {shared}. Fix: remove it")
    for cap in kwargs.get("cap_add") or ():
        if capability(cap) not in policy.allowed_capabilities:
            problems.append(f"cap_add {capability(cap)} is refused (every capability is dropped); "
                            f"allow it with allowed-capabilities = [{capability(cap)!r}] in the policy")
    problems.extend(_requested_security_problems(kwargs.get("security_opt")))
    problems.extend(_cgroup_problems(kwargs.get("cgroupns"), kwargs.get("device_cgroup_rules"), "cgroupns",
                                     "device_cgroup_rules"))
    problems.extend(requested_mount_violations(kwargs, policy))
    if problems:
        raise HardeningError(problems, runtime="docker")
    options_given = [str(opt) for opt in kwargs.get("security_opt") or ()]
    if _security_options(options_given)[0] is not True:
        options_given.append(NO_NEW_PRIVILEGES)
    kwargs["security_opt"] = options_given
    kwargs["cap_drop"] = sorted({capability(c) for c in kwargs.get("cap_drop") or ()} | {"ALL"})
    if kwargs.get("cap_add"):
        kwargs["cap_add"] = sorted({capability(c) for c in kwargs["cap_add"]})
    if not kwargs.get("cgroupns"):
        kwargs["cgroupns"] = "private"
    return kwargs


def _requested_security_problems(security_opt: Any) -> list[str]:
    """``security_opt`` entries that allow privilege escalation or weaken the confinement, one sentence each."""
    options_given = [str(opt) for opt in security_opt or ()]
    weakening = _security_options(options_given)[1]
    problems: list[str] = []
    for opt in options_given:
        spelled = opt.replace(" ", "").lower()
        # every spelling of false Go's ParseBool reads (0, f, F, false, FALSE, False), in any position
        if spelled.startswith("no-new-privileges") and spelled.endswith(("false", "=0", ":0", "=f", ":f")):
            problems.append(f"security_opt {opt!r} allows privilege escalation. Fix: remove it")
        elif opt in weakening:
            problems.append(f"security_opt {opt!r} {weakening[opt]}")
        elif spelled in _WEAKENING_OPTS:  # other spellings the engine refuses, and the CLI's systempaths
            problems.append(f"security_opt {opt!r} removes the container's confinement. Fix: remove it")
    return problems


def docker_violations(host_config: Mapping[str, Any], policy: Policy) -> list[str]:
    """What a container's ``HostConfig`` (as the engine reports it) breaks: a check that hardening held.

    The same rules as :func:`harden_docker`, read from the engine's record: privileged mode, every
    capability dropped and none added beyond ``allowed-capabilities``, no-new-privileges on, no
    confinement removed (``SecurityOpt``, the masked and read-only paths), no host pid/ipc/uts/user
    namespace nor another container's, no host cgroup namespace nor device cgroup rule, and no bind
    mount (``Binds``, ``Mounts``) or device (``Devices``) of a host path that gives away the host.
    """
    problems = []
    if host_config.get("Privileged"):
        problems.append("HostConfig.Privileged is true")
    if "ALL" not in {capability(c) for c in host_config.get("CapDrop") or ()}:
        problems.append("HostConfig.CapDrop lacks ALL")
    extra = {capability(c) for c in host_config.get("CapAdd") or ()} - set(policy.allowed_capabilities)
    if extra:
        problems.append(f"HostConfig.CapAdd holds {sorted(extra)}")
    no_new_privileges, weakening = _security_options(str(o) for o in host_config.get("SecurityOpt") or ())
    if no_new_privileges is not True:
        problems.append("HostConfig.SecurityOpt lacks no-new-privileges")
    problems.extend(f"HostConfig.SecurityOpt holds {opt!r}, which {reason}" for opt, reason in weakening.items())
    problems.extend(_system_paths_violations(host_config))
    for field_name in _NAMESPACE_FIELDS:
        shared = _shared_namespace(host_config.get(field_name), field_name)
        if shared:
            problems.append(f"HostConfig.{field_name} is {host_config[field_name]!r}, which shares {shared}")
    problems.extend(_cgroup_problems(host_config.get("CgroupnsMode"), host_config.get("DeviceCgroupRules"),
                                     "HostConfig.CgroupnsMode", "HostConfig.DeviceCgroupRules"))
    problems.extend(_binds_violations(host_config.get("Binds"), policy, "HostConfig.Binds"))
    problems.extend(_mounts_violations(host_config.get("Mounts"), policy, "HostConfig.Mounts"))
    problems.extend(_devices_violations(host_config.get("Devices"), policy, "HostConfig.Devices"))
    return problems


def mount_violations(mounts: Iterable[Mapping[str, Any]] | None, policy: Policy) -> list[str]:
    """What a container's ``Mounts`` (``docker inspect``: every mount as the engine set it up) break."""
    return _mounts_violations(list(mounts or ()), policy, "Mounts")


def volume_violations(volumes: Iterable[Mapping[str, Any]] | None) -> list[str]:
    """What named volumes (``docker volume inspect`` records) break: a local-driver volume created with
    ``type``, ``o`` or ``device`` options mounts whatever they name (a host path, ``/proc``, an overlay of
    ``/etc``), and a container's record shows only the volume's name. Other drivers' options are the
    plugin's own and an administrator installed it: they pass."""
    problems: list[str] = []
    for volume in volumes or ():
        options = volume.get("Options") if isinstance(volume, Mapping) else None
        if str(volume.get("Driver") or "local") != "local" or not isinstance(options, Mapping):
            continue
        given = sorted(str(key) for key in options if str(key).lower() in LOCAL_MOUNT_OPTIONS)
        if given:
            problems.append(f"volume {volume.get('Name')!r} was created with the local driver's {given} options, "
                            "which mount what they name (a host path, /proc, an overlay of /etc). Fix: mount a "
                            "volume created without them, or bind a directory of your own")
    return problems


def _shared_namespace(value: Any, option: str) -> str | None:
    """What a ``*_mode`` / ``*Mode`` namespace value shares (None: its own namespace). ``container:ID``
    joins that container's, and with it whatever it has: the host's, when it runs with the host's."""
    mode = str(value or "").lower()
    if mode == "host":
        return "the host's namespace"
    if mode.startswith("container:"):
        return (f"another container's namespace, and with it whatever that container has: the host's, when it "
                f"runs with {option} host")
    return None


def _cgroup_problems(cgroupns: Any, rules: Any, ns_key: str, rules_key: str) -> list[str]:
    """The host cgroup namespace, and device cgroup rules (``c *:* rwm`` opens every host device)."""
    problems: list[str] = []
    if str(cgroupns or "").lower() == "host":
        problems.append(f"{ns_key} is 'host': the host's cgroup namespace, its whole cgroup tree. Fix: remove it "
                        "(imagegate sets cgroupns='private')")
    if rules:
        problems.append(f"{rules_key} holds {rules!r}: device "
                        "cgroup rules let the container create and open host devices. Fix: remove it; pass the one "
                        "device the job needs with devices=[...]")
    return problems


def _system_paths_violations(host_config: Mapping[str, Any]) -> list[str]:
    """``MaskedPaths``/``ReadonlyPaths`` that lack the engine's defaults (None: the engine's defaults apply)."""
    problems: list[str] = []
    for field_name, needed in (("MaskedPaths", _MASKED_PATHS), ("ReadonlyPaths", _READONLY_PATHS)):
        paths = host_config.get(field_name)
        if paths is None:
            continue
        missing = [path for path in needed if path not in paths]
        if missing:
            problems.append(f"HostConfig.{field_name} lacks {missing}, which the engine protects in every container "
                            "(systempaths=unconfined)")
    return problems


def _security_options(options: Iterable[str]) -> tuple[bool | None, dict[str, str]]:
    """``SecurityOpt`` read as the engine reads it (moby's ``parseSecurityOpt``): whether
    no-new-privileges ends up on (None: not given; the last one wins), and each option that weakens the
    confinement with why and the fix. An option the engine cannot parse is left out: the engine refuses it."""
    no_new_privileges: bool | None = None
    weakening: dict[str, str] = {}
    for opt in options:
        if opt == "no-new-privileges":
            no_new_privileges = True
            continue
        sep = "=" if "=" in opt else ":" if ":" in opt else None
        key, value = opt.split(sep, 1) if sep else (opt, "")  # a bare "disable" is label=disable to the engine
        if key == "no-new-privileges" and sep:
            no_new_privileges = True if value in _GO_TRUE else False if value in _GO_FALSE else no_new_privileges
            continue
        problem = _option_problem(key, value) if sep or opt in ("disable", "writable-cgroups") else None
        if problem:
            weakening[opt] = problem
    return no_new_privileges, weakening


def _option_problem(key: str, value: str) -> str | None:
    """Why the security option *key* = *value* weakens the confinement (with the fix); None when it does not."""
    if key == "seccomp" and value == "unconfined":
        return "removes the container's confinement (no seccomp filter). Fix: remove it (the engine's default profile applies)"
    if key == "seccomp" and value not in DEFAULT_SECCOMP:
        return ("replaces the engine's default seccomp profile with one of the launch's own (the engine loads any value "
                "but 'unconfined' and 'builtin' as a JSON profile, and one may allow every system call), which may "
                "remove the container's confinement. Fix: remove it, or give seccomp=builtin (the engine's default "
                "profile)")
    if key == "apparmor" and value == "unconfined":
        return "removes the container's confinement (no AppArmor profile). Fix: remove it (the engine's default applies)"
    if key in ("label", "disable"):
        return _label_problem(value if key == "label" else "disable")
    if key == "writable-cgroups" and (value == "" or value in _GO_TRUE):
        return ("makes the cgroup filesystem writable in the container (privileged mode's setting), which weakens the "
                "container's confinement. Fix: remove it")
    return None


def _label_problem(value: str) -> str | None:
    """An SELinux label option (go-selinux's ``InitLabels``: ``disable``, or ``KEY:VALUE`` with KEY type,
    user, role, level or filetype) held to the Pod Security baseline: a type from :data:`SELINUX_TYPES`,
    no user or role; a level is free there too. ``filetype`` (the files' type) has no baseline twin: refused."""
    if value == "disable":
        return "removes the container's confinement (SELinux labelling off). Fix: remove it"
    kind, sep, name = value.partition(":")
    if not sep:
        return None  # the engine refuses it
    if kind == "type" and name not in SELINUX_TYPES:
        return (f"runs the container under SELinux type {name!r}, not container_t, container_init_t or container_kvm_t, "
                "which may remove the container's confinement. Fix: remove it")
    if kind in ("user", "role", "filetype"):
        return (f"sets the SELinux {kind} (only a type of container_t, container_init_t, container_kvm_t and a level "
                "may be set), which may remove the container's confinement. Fix: remove it")
    return None


# -- host paths ---------------------------------------------------------------------------------------

#: Host paths a container must not get, and why. A bind of one of them, of a path inside one, or of
#: a directory that contains one (``/``, ``/var``) is refused unless the policy's ``allowed-host-paths``
#: lists it. Kubernetes needs no list: the restricted profile refuses every ``hostPath`` volume.
REFUSED_HOST_PATHS: Mapping[str, str] = {
    "/proc": "the host's processes and kernel settings",
    "/sys": "the host's kernel and device settings",
    "/dev": "the host's devices (disks, memory)",
    "/boot": "the host's kernel and boot loader",
    "/etc": "the host's configuration and credentials (shadow, sudoers, the engine's own)",
    "/root": "root's home (keys and credentials)",
    "/run": "the host's runtime sockets, the Docker, containerd, podman and CRI-O APIs among them",
    "/var/run": "the host's runtime sockets, the Docker, containerd, podman and CRI-O APIs among them",
    "/var/lib/docker": "the Docker Engine's state: every container's and image's files",
    "/var/lib/containerd": "containerd's state: every container's files",
    "/var/lib/containers": "podman's and CRI-O's state: every container's files",
    "/var/lib/kubelet": "the kubelet's state: every pod's secrets",
}
#: A socket by one of these names is a container engine's API — root on the host — wherever it lives.
ENGINE_SOCKETS = frozenset(
    {"docker.sock", "containerd.sock", "podman.sock", "crio.sock", "cri-dockerd.sock", "dockershim.sock", "buildkitd.sock"}
)


def clean_path(path: str) -> str:
    """An absolute path as the engine cleans a bind source (Go's ``filepath.Clean``): one leading
    slash, no empty, ``.`` or ``..`` components, ``..`` at the root staying there.

    Written here because :func:`os.path.normpath` keeps a leading ``//`` (POSIX leaves it to the
    system), which the engine does not: ``//var/run/docker.sock`` is ``/var/run/docker.sock`` to it.
    """
    parts: list[str] = []
    for part in path.split("/"):
        if part == "..":
            if parts:
                parts.pop()
        elif part not in ("", "."):
            parts.append(part)
    return "/" + "/".join(parts)


def host_path_problem(source: str, policy: Policy, *, where: str, device: bool = False) -> str | None:
    """Why bind-mounting host path *source* would give the container the host; None when it would not.

    *source* is read as the engine reads it: cleaned (:func:`clean_path`), then resolved on this
    host (:func:`os.path.realpath`: the engine follows symlinks when it mounts). Both spellings must
    pass — a refused path (:data:`REFUSED_HOST_PATHS`, compared component by component, so
    ``/etcetera`` is not ``/etc``), a path inside one or a directory that holds one, a socket named
    like a container engine's (:data:`ENGINE_SOCKETS`), or (resolved) any Unix socket — unless it is
    inside a path the policy's ``allowed-host-paths`` lists. *where* names the option in the message;
    *device*: *source* is a device passed through (``devices``), not a bind mount.
    """
    if not source.startswith("/"):
        return (f"{where}: the bind source {source!r} is not an absolute host path (the engine refuses relative "
                "bind sources); give the absolute path of a directory of your own")
    if "\x00" in source:
        return f"{where}: the bind source {source!r} holds a NUL byte"
    lexical = clean_path(source)
    resolved = _resolve(lexical)
    allowed = _allowed_paths(policy)
    for spelling, on_disk in ((lexical, False), (resolved, True)):
        reason = _refusal(spelling, on_disk=on_disk)
        if reason is None or any(_within(spelling, base) for base in allowed):
            continue
        shown = repr(source) if spelling == source else f"{source!r} (the host's {spelling})"
        verb, instead = ("passes the host device", "leave the device out") if device else (
            "bind-mounts", "mount a directory of your own instead")
        return (f"{where} {verb} {shown}: {reason}, which gives the container the host. Fix: {instead}; if the "
                f"task truly needs it, list it under allowed-host-paths = [{lexical!r}] in the policy")
    return None


def _refusal(path: str, *, on_disk: bool) -> str | None:
    if path == "/":
        return "/ is the host's whole filesystem"
    name = path.rsplit("/", 1)[-1]
    if name in ENGINE_SOCKETS:
        return f"{name} is a container engine's API socket (whoever reaches it is root on the host)"
    for base, what in REFUSED_HOST_PATHS.items():
        if _within(path, base):
            return f"{base} is {what}"
        if _within(base, path):
            return f"it holds {base}, {what}"
    if on_disk and _is_socket(path):
        return "it is a Unix socket, a door into a host service (a container engine's API is root on the host)"
    return None


def _within(path: str, base: str) -> bool:
    """*path* is *base* or inside it, component by component (``/etcetera`` is not inside ``/etc``)."""
    return base == "/" or path == base or path.startswith(base + "/")


def _resolve(path: str) -> str:
    """*path* with every symlink resolved on this host, as the engine resolves it when it mounts."""
    try:
        return os.path.realpath(path)
    except (OSError, ValueError):
        return path


def _is_socket(path: str) -> bool:
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def _allowed_paths(policy: Policy) -> set[str]:
    """The policy's ``allowed-host-paths``, cleaned; and resolved on this host too, but only for an entry
    the rule refuses (``/var/run/docker.sock`` is ``/run/docker.sock``). An entry the rule would pass
    anyway is never widened by what it resolves to: a symlink planted at an allowed ``/srv/shared``
    pointing at ``/`` must not allow every path."""
    out: set[str] = set()
    for path in policy.allowed_host_paths:
        lexical = clean_path(path)
        out.add(lexical)
        if _refusal(lexical, on_disk=True) is not None:
            out.add(_resolve(lexical))
    return out


def requested_mount_violations(options: Mapping[str, Any], policy: Policy) -> list[str]:
    """The host paths that Docker create / host-config keyword arguments (the docker SDK's names) would
    bind: ``mounts`` (``docker.types.Mount`` or Engine API dicts), ``binds`` and ``volumes``
    (``"SRC:DST[:MODE]"`` strings or ``{SRC: {"bind": DST}}``), ``devices`` (``"HOST[:CONTAINER[:PERMS]]"``)."""
    problems: list[str] = []
    for key in ("binds", "volumes"):
        problems.extend(_binds_violations(options.get(key), policy, key))
    problems.extend(_mounts_violations(options.get("mounts"), policy, "mounts"))
    problems.extend(_devices_violations(options.get("devices"), policy, "devices"))
    return problems


def _binds_violations(binds: Any, policy: Policy, key: str) -> list[str]:
    """``SRC:DST[:MODE]`` entries split as the engine splits them on Linux (on every ``:``): one part is an
    anonymous volume, a source that starts with ``/`` a host path, a volume name a named volume."""
    if not binds:
        return []
    entries = list(binds.items()) if isinstance(binds, Mapping) else [(entry, None) for entry in binds]
    problems: list[str] = []
    for index, (entry, _) in enumerate(entries):
        text = entry.decode("utf-8", "replace") if isinstance(entry, bytes) else str(entry)
        where = f"{key}[{index}] {text!r}"
        parts = text.split(":")
        if isinstance(binds, Mapping):
            source = text  # {SRC: {"bind": DST, "mode": MODE}}
        elif len(parts) > 1:
            source = parts[0]
        else:
            continue  # "/data": an anonymous volume, nothing of the host
        if not source.startswith("/") and _VOLUME_NAME.fullmatch(source):
            continue  # a named volume
        problem = host_path_problem(source, policy, where=where)
        if problem:
            problems.append(problem)
    return problems


def _mounts_violations(mounts: Any, policy: Policy, key: str) -> list[str]:
    """Mount entries (``docker.types.Mount``, Engine API dicts, the provider's keyword dicts; keys read
    case-blind, every spelling of a key checked, as Go's decoder may take any of them)."""
    problems: list[str] = []
    for index, mount in enumerate(mounts or ()):
        if not isinstance(mount, Mapping):
            problems.append(f"{key}[{index}] {mount!r} is not a mount: give a docker.types.Mount(target=…, source=…, "
                            "type='bind') (the engine cannot read a string here)")
            continue
        kinds = {str(t).lower() for t in _values(mount, "type")}
        target = next((str(t) for t in (*_values(mount, "target"), *_values(mount, "destination")) if t), "?")
        where = f"{key}[{index}] (-> {target})"
        for source in _values(mount, "source"):
            if not isinstance(source, str) or not source:
                continue
            if "bind" in kinds or (source.startswith("/") and not kinds & {"volume", "tmpfs", "npipe"}):
                problem = host_path_problem(source, policy, where=where)
                if problem:
                    problems.append(problem)
        problems.extend(_mount_kind_problems(kinds, where))
        given = _driver_options(mount)
        if given:
            problems.append(f"{where} gives the volume driver options {given}: the local driver's type, o and device "
                            "mount what they name (o=bind,device=. is the engine's working directory, /; type=proc, "
                            "an overlay of /etc), and no driver option is judged here. Fix: create the volume "
                            "beforehand with docker volume create and mount it by name")
    return problems


def _mount_kind_problems(kinds: set[str], where: str) -> list[str]:
    """A mount type other than :data:`MOUNT_TYPES` (unset is left to the engine, which refuses it)."""
    problems: list[str] = []
    for kind in sorted(kinds - MOUNT_TYPES):
        if kind == "image":
            problems.append(f"{where} is an image mount: it puts the files of an image imagegate never checked in "
                            "the container. Fix: build what the job needs into the checked image")
        else:
            problems.append(f"{where} is a mount of type {kind!r}; only bind, volume and tmpfs mounts are judged "
                            "here. Fix: use one of those")
    return problems


def _driver_options(mount: Mapping[str, Any]) -> list[str]:
    """The option names of every ``DriverConfig`` of a mount (``VolumeOptions.DriverConfig``, or the
    keyword dicts' top-level ``driver_config``); an options value that is not a mapping counts whole."""
    configs = [c for options in _values(mount, "volumeoptions") if isinstance(options, Mapping)
               for c in _values(options, "driverconfig")]
    configs += list(_values(mount, "driverconfig"))
    given: list[str] = []
    for config in configs:
        for options in (_values(config, "options") if isinstance(config, Mapping) else ()):
            if isinstance(options, Mapping):
                given.extend(str(key) for key in options)
            elif options:
                given.append(repr(options))
    return sorted(set(given))


def _devices_violations(devices: Any, policy: Policy, key: str) -> list[str]:
    problems: list[str] = []
    for index, device in enumerate(devices or ()):
        paths = _values(device, "pathonhost") if isinstance(device, Mapping) else [str(device).split(":")[0]]
        for path in paths:
            problem = host_path_problem(str(path), policy, where=f"{key}[{index}]", device=True)
            if problem:
                problems.append(problem)
    return problems


def _values(mapping: Mapping[str, Any], name: str) -> list[Any]:
    """Every value of *mapping* whose key is *name* ignoring case and underscores (``Source``, ``source``)."""
    return [value for key, value in mapping.items() if isinstance(key, str) and key.replace("_", "").lower() == name]


# -- Kubernetes ---------------------------------------------------------------------------------------


def harden_pod(pod: Mapping[str, Any], policy: Policy, *, uid: int | None = None, gid: int | None = None) -> dict[str, Any]:
    """A copy of *pod* (a camelCase dict, as the API server reads it) under the restricted profile.

    Defaults fill what is unset — ``runAsNonRoot``, ``seccompProfile: RuntimeDefault``, ``runAsUser``
    / ``runAsGroup`` (*uid*/*gid*: the image's numeric user), and for every init, regular and
    ephemeral container ``allowPrivilegeEscalation: false`` and ``capabilities.drop: [ALL]``. Values
    the user set are kept; the result must then pass :func:`restricted_violations`.

    Raises:
        HardeningError: naming every field that breaks the profile.
    """
    result = copy.deepcopy(dict(pod))
    spec = result.setdefault("spec", {})
    pod_sc = spec.setdefault("securityContext", {}) or {}
    spec["securityContext"] = pod_sc
    pod_profile_given = "seccompProfile" in pod_sc
    pod_sc.setdefault("runAsNonRoot", True)
    pod_sc.setdefault("seccompProfile", dict(RUNTIME_DEFAULT))
    if uid is not None:
        pod_sc.setdefault("runAsUser", uid)
    if gid is not None:
        pod_sc.setdefault("runAsGroup", gid)
    for field in CONTAINER_FIELDS:
        for container in spec.get(field) or ():
            sc = container.setdefault("securityContext", {}) or {}
            container["securityContext"] = sc
            sc.setdefault("allowPrivilegeEscalation", False)
            sc.setdefault("runAsNonRoot", True)
            caps = sc.setdefault("capabilities", {}) or {}
            sc["capabilities"] = caps
            caps["drop"] = sorted({capability(c) for c in caps.get("drop") or ()} | {"ALL"})
            if not pod_profile_given:  # a profile the user chose for the pod is not overridden per container
                sc.setdefault("seccompProfile", dict(RUNTIME_DEFAULT))
    problems = restricted_violations(result, policy)
    if problems:
        raise HardeningError(problems, runtime="kubernetes")
    return result


def restricted_violations(pod: Mapping[str, Any], policy: Policy | None = None) -> list[str]:
    """Every rule of Kubernetes' *restricted* Pod Security Standard, baseline included, that *pod* (a
    camelCase dict: ``spec``, and ``metadata.annotations`` where AppArmor and seccomp annotations live)
    breaks, one sentence each naming the field (empty when it passes).

    The rules and allowed values are pod-security-admission's (see :data:`PSA_SOURCE`), at the narrowest
    any release from 1.28 to 1.37 accepts. With a *policy*, added capabilities must also be listed in its
    ``allowed-capabilities``.
    """
    spec = pod.get("spec") or {}
    pod_sc = spec.get("securityContext") or {}
    problems: list[str] = []
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(key):
            problems.append(f"spec.{key} must be unset or false")
    for volume in spec.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if kinds - ALLOWED_VOLUME_TYPES:
            problems.append(f"volume {volume.get('name')!r} uses {sorted(kinds - ALLOWED_VOLUME_TYPES)}, not allowed")
    if pod_sc.get("runAsUser") == 0:
        problems.append("spec.securityContext.runAsUser must not be 0")
    if pod_sc.get("runAsNonRoot") is False:  # even when every container sets true (check_runAsNonRoot.go)
        problems.append("spec.securityContext.runAsNonRoot must not be false. Fix: set it true or leave it unset")
    if pod_sc.get("seccompProfile") is not None:
        pod_seccomp = _type_of(pod_sc["seccompProfile"])
        if pod_seccomp not in ALLOWED_SECCOMP:
            problems.append(f"spec.securityContext.seccompProfile.type {pod_seccomp!r} must be RuntimeDefault or Localhost")
    problems.extend(_context_violations(pod_sc, "spec.securityContext"))
    problems.extend(_sysctl_violations(pod_sc.get("sysctls")))
    problems.extend(_annotation_violations((pod.get("metadata") or {}).get("annotations")))
    allowed = RESTRICTED_ADDABLE if policy is None else RESTRICTED_ADDABLE & set(policy.allowed_capabilities)
    for field in CONTAINER_FIELDS:
        for container in spec.get(field) or []:
            problems.extend(_container_violations(container, pod_sc, f"{field}[{container.get('name')}]", allowed))
    return problems


def _container_violations(container: Mapping[str, Any], pod_sc: Mapping[str, Any], where: str,
                          addable: frozenset[str] | set[str]) -> list[str]:
    sc = container.get("securityContext") or {}
    problems: list[str] = []
    if sc.get("privileged"):
        problems.append(f"{where}.securityContext.privileged must be false")
    if sc.get("allowPrivilegeEscalation") is not False:
        problems.append(f"{where}.securityContext.allowPrivilegeEscalation must be false")
    caps = sc.get("capabilities") or {}
    # compared as the admission compares them, exactly: "all" or "CAP_NET_BIND_SERVICE" is not what it allows
    if "ALL" not in list(caps.get("drop") or []):
        problems.append(f"{where}.securityContext.capabilities.drop must include ALL")
    added = {str(c) for c in caps.get("add") or []} - set(addable)
    if added:
        problems.append(
            f"{where}.securityContext.capabilities.add may hold only NET_BIND_SERVICE, and only when the policy "
            f"allows it (allowed-capabilities), not {sorted(added)}"
        )
    non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
    if non_root is not True:
        problems.append(f"{where}: runAsNonRoot must be true (container or pod securityContext)")
    if sc.get("runAsUser") == 0:
        problems.append(f"{where}.securityContext.runAsUser must not be 0")
    if sc.get("seccompProfile") is not None:  # a container's own profile is judged, not its pod's
        seccomp = _type_of(sc["seccompProfile"])
        if seccomp not in ALLOWED_SECCOMP:
            problems.append(f"{where}.securityContext.seccompProfile.type {seccomp!r} must be RuntimeDefault or Localhost")
    elif _type_of(pod_sc.get("seccompProfile")) not in ALLOWED_SECCOMP:
        problems.append(f"{where}: seccompProfile.type must be RuntimeDefault or Localhost (container or pod)")
    problems.extend(_context_violations(sc, f"{where}.securityContext"))
    proc_mount = sc.get("procMount")
    if proc_mount is not None and proc_mount != "Default":
        problems.append(f"{where}.securityContext.procMount {proc_mount!r} unmasks /proc. Fix: remove it (or set Default)")
    for port in container.get("ports") or []:
        if port.get("hostPort"):
            problems.append(f"{where}.ports: hostPort must be unset or 0")
    problems.extend(_probe_host_violations(container, where))
    return problems


def _type_of(profile: Any) -> Any:
    """The ``type`` of a seccomp or AppArmor profile object (None when unset or not an object)."""
    return profile.get("type") if isinstance(profile, Mapping) else None


def _context_violations(sc: Mapping[str, Any], where: str) -> list[str]:
    """The baseline rules a pod's and a container's securityContext share: SELinux options, AppArmor
    profile, Windows host process."""
    problems: list[str] = []
    selinux = sc.get("seLinuxOptions")
    if selinux is not None:
        selinux = selinux if isinstance(selinux, Mapping) else {"type": selinux}
        if (selinux.get("type") or "") not in SELINUX_TYPES:
            problems.append(f"{where}.seLinuxOptions.type {selinux.get('type')!r} is not one of container_t, "
                            "container_init_t, container_kvm_t. Fix: remove it")
        for key in ("user", "role"):
            if selinux.get(key):
                problems.append(f"{where}.seLinuxOptions.{key} must not be set. Fix: remove it")
    if sc.get("appArmorProfile") is not None:
        kind = _type_of(sc["appArmorProfile"])
        if kind not in ALLOWED_APPARMOR:
            problems.append(f"{where}.appArmorProfile.type {kind!r} must be RuntimeDefault or Localhost. Fix: remove "
                            "it (the runtime's default profile applies)")
    windows = sc.get("windowsOptions")
    if windows and (not isinstance(windows, Mapping) or windows.get("hostProcess")):
        problems.append(f"{where}.windowsOptions.hostProcess must be unset or false (a host process is the host). "
                        "Fix: remove it")
    return problems


def _sysctl_violations(sysctls: Any) -> list[str]:
    problems: list[str] = []
    for index, sysctl in enumerate(sysctls or ()):
        name = sysctl.get("name") if isinstance(sysctl, Mapping) else sysctl
        if name not in SAFE_SYSCTLS:
            problems.append(f"spec.securityContext.sysctls[{index}].name {name!r} is not a safe sysctl (allowed: "
                            f"{', '.join(sorted(SAFE_SYSCTLS))}). Fix: remove it")
    return problems


def _annotation_violations(annotations: Any) -> list[str]:
    """AppArmor and (alpha) seccomp profiles set by annotation: the kubelet and the API server still read
    them, so ``unconfined`` there is what ``Unconfined`` is in the fields."""
    problems: list[str] = []
    for key, value in (annotations.items() if isinstance(annotations, Mapping) else ()):
        key = str(key)
        if key.startswith(APPARMOR_ANNOTATION) and not (
                isinstance(value, str) and (value in ("", "runtime/default") or value.startswith("localhost/"))):
            problems.append(f"metadata.annotations[{key!r}] {value!r} must be runtime/default or localhost/<profile>. "
                            "Fix: remove the annotation")
        seccomp = key == SECCOMP_POD_ANNOTATION or key.startswith(SECCOMP_CONTAINER_ANNOTATION)
        if seccomp and not (isinstance(value, str) and (
                value in ("runtime/default", "docker/default") or value.startswith("localhost/"))):
            problems.append(f"metadata.annotations[{key!r}] {value!r} must be runtime/default or localhost/<profile>. "
                            "Fix: remove the annotation (the seccompProfile field replaces it)")
    return problems


def _probe_host_violations(container: Mapping[str, Any], where: str) -> list[str]:
    """check_hostProbesAndhostLifecycle.go (1.34): a probe or lifecycle handler must not name a ``host``,
    which would make the kubelet connect from the node to any address it is given."""
    handlers = [(name, container.get(name)) for name in _PROBES]
    lifecycle = container.get("lifecycle") or {}
    handlers += [(f"lifecycle.{name}", lifecycle.get(name)) for name in ("postStart", "preStop")]
    problems: list[str] = []
    for name, handler in handlers:
        for kind in ("httpGet", "tcpSocket"):
            action = (handler or {}).get(kind) or {}
            if action.get("host"):
                problems.append(f"{where}.{name}.{kind}.host {action['host']!r} must be unset. Fix: remove it (the "
                                "kubelet then probes the pod's own IP)")
    return problems
