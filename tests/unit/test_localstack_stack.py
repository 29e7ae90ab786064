"""The pure parts of scripts/localstack's stack side: registry config, registry log parser, state and env
files, TLS argv, base image layout, mirror and mount parsing, /proc parsing, status lines.

No network, no root, no Docker: everything here renders, parses or writes into a tmp dir.
"""

from __future__ import annotations

import json
import os
import shlex
import struct
import tarfile
from pathlib import Path

import pytest
from localstack import host, images, procs, python_rootfs, registries, registry_auth, registry_log, stack_cli, state

yaml = pytest.importorskip("yaml")


# --- registry config -----------------------------------------------------------------------------

AUTH = {"server_cert": "/s/auth/server.crt", "server_key": "/s/auth/server.key", "htpasswd": "/s/auth/htpasswd"}


@pytest.mark.parametrize(
    ("name", "port", "auth"),
    [("registry", 5000, None), ("auth-registry", 41234, AUTH), ("with \"quote\" and: colon", 1, None)],
)
def test_registry_config_renders_valid_yaml(name, port, auth, tmp_path):
    data_dir = tmp_path / "data dir: with spaces"
    doc = yaml.safe_load(registries.registry_config(name, port, data_dir, auth, secret="s3cret"))
    assert doc["version"] == 0.1
    assert doc["http"]["addr"] == f"127.0.0.1:{port}"
    assert doc["http"]["secret"] == "s3cret"
    assert doc["http"]["headers"] == {"X-Content-Type-Options": ["nosniff"]}
    assert doc["storage"]["filesystem"]["rootdirectory"] == str(data_dir)
    assert doc["storage"]["delete"] == {"enabled": True}
    assert doc["storage"]["maintenance"]["uploadpurging"]["enabled"] is False
    assert doc["log"]["fields"] == {"service": "registry", "instance": name}
    assert doc["log"]["accesslog"] == {"disabled": False}
    if auth:
        assert doc["http"]["tls"] == {"certificate": AUTH["server_cert"], "key": AUTH["server_key"]}
        assert doc["auth"] == {"htpasswd": {"realm": "imagegate-test", "path": AUTH["htpasswd"]}}
    else:
        assert "tls" not in doc["http"] and "auth" not in doc


def test_registry_config_secret_is_random_unless_given(tmp_path):
    a = yaml.safe_load(registries.registry_config("r", 1, tmp_path, None))["http"]["secret"]
    b = yaml.safe_load(registries.registry_config("r", 1, tmp_path, None))["http"]["secret"]
    assert a != b and len(a) == 48


@pytest.mark.parametrize(
    ("auth", "scheme", "extra"),
    [(None, "http", set()), ({**AUTH, "user": "u", "password": "p"}, "https", {"auth", "user", "password"})],
)
def test_registry_record(auth, scheme, extra, tmp_path):
    rec = registries.registry_record(4242, auth, tmp_path / "c.yml", tmp_path / "d", tmp_path / "a.log")
    assert rec["addr"] == "127.0.0.1:4242" and rec["url"] == f"{scheme}://127.0.0.1:4242"
    assert rec["config"] == str(tmp_path / "c.yml") and rec["access_log"] == str(tmp_path / "a.log")
    assert extra <= set(rec)


def test_basic_auth_header():
    assert registries.basic_auth("imagegate", "pw") == "Basic aW1hZ2VnYXRlOnB3"


# --- registry log ------------------------------------------------------------------------------

LOG = [
    # a plain request
    'time="2026-01-02T03:04:05.1Z" level=info msg="response completed" go.version=go1.19 '
    'http.request.method=GET http.request.uri="/v2/" http.response.status=200 instance=registry',
    # a manifest HEAD with a nested repo and a tag
    'time="2026-01-02T03:04:06Z" level=info msg="response completed" http.request.method=HEAD '
    'http.request.uri="/v2/team/etl/manifests/1.0" http.response.status=404',
    # a blob upload with a query string
    'time="t3" level=info msg="response completed" http.request.method=PUT '
    'http.request.uri="/v2/base/busybox/blobs/uploads/abc?digest=sha256%3Aff" http.response.status=201',
    # "with error" still counts
    'time="t4" level=error msg="response completed with error" err.code="blob unknown" '
    'http.request.method=GET http.request.uri="/v2/a/blobs/sha256:00" http.response.status=404',
    # the auth registry's 401 challenge: no status field, counted as 401
    'time="t5" level=warning msg="error authorizing context: basic authentication challenge for realm '
    '\\"imagegate-test\\": invalid authorization credential" http.request.method=GET http.request.uri="/v2/"',
    # skipped: an accepted request's extra line, and unrelated lines
    'time="t6" level=info msg="authorized request" http.request.method=GET http.request.uri="/v2/"',
    'time="t7" level=info msg="listening on 127.0.0.1:5000"',
    # catalog, tags, something else, and a non-numeric status
    'time="t8" msg="response completed" http.request.method=GET http.request.uri="/v2/_catalog?n=10" '
    "http.response.status=200",
    'time="t9" msg="response completed" http.request.method=GET http.request.uri="/v2/x/y/tags/list" '
    "http.response.status=200",
    'time="t10" msg="response completed" http.request.method=GET http.request.uri="/debug/vars" '
    "http.response.status=abc",
]

EXPECTED = [
    ("GET", "/v2/", "base", None, 200, "2026-01-02T03:04:05.1Z"),
    ("HEAD", "/v2/team/etl/manifests/1.0", "manifest", "team/etl", 404, "2026-01-02T03:04:06Z"),
    ("PUT", "/v2/base/busybox/blobs/uploads/abc", "upload", "base/busybox", 201, "t3"),
    ("GET", "/v2/a/blobs/sha256:00", "blob", "a", 404, "t4"),
    ("GET", "/v2/", "base", None, 401, "t5"),
    ("GET", "/v2/_catalog", "catalog", None, 200, "t8"),
    ("GET", "/v2/x/y/tags/list", "tags", "x/y", 200, "t9"),
    ("GET", "/debug/vars", "other", None, 0, "t10"),
]


def test_registry_requests_parses_logrus_lines(tmp_path):
    log = tmp_path / "registry.log"
    log.write_text("\n".join(LOG) + "\n")
    got = registry_log.registry_requests(log)
    assert [(r["method"], r["path"], r["kind"], r["repo"], r["status"], r["time"]) for r in got] == EXPECTED
    assert got[2]["uri"] == "/v2/base/busybox/blobs/uploads/abc?digest=sha256%3Aff"


def test_registry_requests_from_offset(tmp_path):
    log = tmp_path / "registry.log"
    log.write_text(LOG[0] + "\n")
    start = os.path.getsize(log)
    with open(log, "a") as f:
        f.write(LOG[1] + "\n")
    assert [r["kind"] for r in registry_log.registry_requests(log, start)] == ["manifest"]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/v2", ("base", None)),
        ("/v2/", ("base", None)),
        ("/v2/_catalog", ("catalog", None)),
        ("/v2/r/manifests/sha256:ab", ("manifest", "r")),
        ("/v2/a/b/c/blobs/sha256:ab", ("blob", "a/b/c")),
        ("/v2/r/blobs/uploads/", ("upload", "r")),
        ("/v2/r/tags/list", ("tags", "r")),
        ("/v2/r/referrers/sha256:ab", ("other", None)),
        ("/metrics", ("other", None)),
    ],
)
def test_classify_path(path, expected):
    assert registry_log.classify_path(path) == expected


def test_logrus_fields_quotes_and_escapes():
    fields = registry_log.logrus_fields('a=1 b="two words" c="say \\"hi\\"" d= e="bad \\x"')
    assert fields == {"a": "1", "b": "two words", "c": 'say "hi"', "d": "", "e": "bad \\x"}


# --- state and env files -----------------------------------------------------------------------


def _stack_state(sdir: Path) -> dict:
    st = state.empty_state(sdir)
    st["docker"] = {"host": "unix:///var/run/docker.sock", "started": False}
    st["registry"] = {"addr": "127.0.0.1:5000", "url": "http://127.0.0.1:5000", "log": "/l", "access_log": "/a"}
    st["auth_registry"] = {"addr": "127.0.0.1:5001", "url": "https://127.0.0.1:5001", "user": "imagegate",
                           "password": "p$w 'q'", "ca_cert": "/ca.crt", "log": "/al", "access_log": "/aa"}
    st["images"]["busybox"] = {"ref": "127.0.0.1:5000/base/busybox:1.35.0", "ref_by_digest": "r@d", "local": "l"}
    return st


def _parse_env(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        assert line.startswith("export ")
        key, _, value = line[len("export "):].partition("=")
        (out[key],) = shlex.split(value)
    return out


def test_state_round_trip(tmp_path, monkeypatch):
    monkeypatch.setenv("IMAGEGATE_STACK_DIR", str(tmp_path))
    sdir = state.state_dir_from(None)
    assert sdir == tmp_path.resolve()
    st = _stack_state(sdir)
    state.save_state(sdir, st)
    loaded = state.load_state()
    assert loaded == json.loads(json.dumps(st)) and loaded["updated"]
    env = _parse_env((sdir / state.ENV_FILE).read_text())
    assert env == loaded["env"]
    assert env["IMAGEGATE_AUTH_PASSWORD"] == "p$w 'q'"
    assert env["IMAGEGATE_REGISTRY"] == "127.0.0.1:5000" and env["IMAGEGATE_PYTHON_IMAGE"] == ""
    assert list(env)[:2] == ["IMAGEGATE_STACK_DIR", "DOCKER_HOST"]
    assert (sdir / state.ENV_FILE).read_text().startswith(state.ENV_HEADER)
    for f in (state.STATE_FILE, state.ENV_FILE):
        assert (sdir / f).stat().st_mode & 0o777 == 0o600


def test_state_dir_argument_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("IMAGEGATE_STACK_DIR", "/elsewhere")
    assert state.state_dir_from(str(tmp_path)) == tmp_path.resolve()
    monkeypatch.delenv("IMAGEGATE_STACK_DIR")
    assert state.state_dir_from(None) == Path(state.DEFAULT_STATE_DIR).resolve()


def test_load_state_missing_has_a_hint(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"stack\.json does not exist: run `python3 scripts/stack\.py up`"):
        state.load_state(tmp_path)


def test_env_file_text_quotes():
    assert state.env_file_text("# h\n", {"A": "x y", "B": ""}) == "# h\nexport A='x y'\nexport B=''\n"


def test_lock_and_remove_state_files(tmp_path):
    sdir = tmp_path / "new"
    with state.state_lock(sdir):
        assert (sdir / ".lock").exists()
    (sdir / state.STATE_FILE).write_text("{}")
    state.remove_state_files(sdir, (state.STATE_FILE, state.ENV_FILE))
    assert sorted(p.name for p in sdir.iterdir()) == [".lock"]


def test_write_file_is_atomic_with_mode(tmp_path):
    target = tmp_path / "f"
    host.write_file(target, "one", 0o600)
    host.write_file(target, "two", 0o640)
    assert target.read_text() == "two" and target.stat().st_mode & 0o777 == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["f"]


# --- status, down, up helpers of the command line ---------------------------------------------------


def test_new_state_without_running_components_is_created_now(tmp_path):
    st = stack_cli.new_state(tmp_path, {"created": "2000-01-01T00:00:00+00:00"}, True)
    assert st["created"] != "2000-01-01T00:00:00+00:00" and st["options"] == {"no_python_base": True}
    assert st["images"] == {"busybox": None, "python": None} and st["state_dir"] == str(tmp_path)


@pytest.mark.parametrize(
    ("ok", "alive", "expected"),
    [
        (True, True, "registry       running  pid 42     http://x  log /l"),
        (False, False, "registry       DOWN     pid 42 (gone or not ours) http://x  log /l"),
        (False, True, "registry       DOWN     pid 42 (process alive but not answering) http://x  log /l"),
    ],
)
def test_component_line(ok, alive, expected):
    assert stack_cli.component_line("registry", {"pid": 42, "log": "/l"}, ok, alive, "http://x") == expected


@pytest.mark.parametrize(
    ("name", "options", "expected"),
    [
        ("python", {"no_python_base": True}, (True, "image python   skipped (--no-python-base)")),
        ("python", None, (True, "image python   skipped (--no-python-base)")),
        ("python", {"no_python_base": False}, (False, "image python   MISSING (up did not finish)")),
        ("busybox", {"no_python_base": True}, (False, "image busybox  MISSING (up did not finish)")),
    ],
)
def test_image_status_when_not_built(name, options, expected):
    assert stack_cli.image_status({"options": options}, name, None) == expected


def test_image_status_without_registry_is_missing():
    img = {"ref": "127.0.0.1:1/base/busybox:1.35.0", "digest": "sha256:aa"}
    assert stack_cli.image_status({}, "busybox", img) == (
        False, "image busybox  MISSING  127.0.0.1:1/base/busybox:1.35.0 sha256:aa"
    )


def test_registry_refs():
    st = {"images": {"busybox": {"ref": "r/b:1"}, "python": {"ref": "r/p:3.11", "tags": ["r/p:3.11", "r/p:3.11.2"]}}}
    assert stack_cli.registry_refs(st) == ["r/b:1", "r/p:3.11", "r/p:3.11.2"]
    assert stack_cli.registry_refs({"images": {"busybox": None}}) == []


def test_parser():
    args = stack_cli.build_parser().parse_args(["up", "--no-python-base", "--state-dir", "/s"])
    assert (args.command, args.no_python_base, args.rebuild_base, args.docker_timeout, args.state_dir) == (
        "up", True, False, 60.0, "/s"
    )
    assert stack_cli.build_parser().parse_args(["--state-dir", "/t", "down"]).state_dir == "/t"
    assert stack_cli.build_parser().parse_args(["down", "--keep-docker"]).keep_docker is True


# --- TLS material --------------------------------------------------------------------------------


def test_tls_argv():
    p = Path
    ca = registry_auth.ca_argv("openssl", p("/a/ca.key"), p("/a/ca.crt"))
    assert ca[:3] == ["openssl", "req", "-x509"] and ca[ca.index("-keyout") + 1] == "/a/ca.key"
    assert "basicConstraints=critical,CA:TRUE" in ca and ca[ca.index("-days") + 1] == "3650"
    key = registry_auth.server_key_argv("openssl", p("/a/s.key"), p("/a/s.csr"))
    assert key[key.index("-subj") + 1] == "/CN=127.0.0.1" and key[-1] == "/a/s.csr"
    sign = registry_auth.sign_argv("openssl", p("/csr"), p("/ca.crt"), p("/ca.key"), p("/ext"), p("/crt"))
    assert [sign[sign.index(f) + 1] for f in ("-in", "-CA", "-CAkey", "-extfile", "-out", "-days")] == [
        "/csr", "/ca.crt", "/ca.key", "/ext", "/crt", "825"
    ]
    assert "subjectAltName=IP:127.0.0.1,DNS:localhost" in registry_auth.SERVER_EXT.splitlines()


def test_auth_material_reuses_existing_files(tmp_path):
    files = {k: tmp_path / k for k in ("ca_cert", "server_cert", "server_key", "htpasswd")}
    for f in files.values():
        f.write_text("x")
    old = {**{k: str(v) for k, v in files.items()}, "ca_key": "/k", "user": "imagegate", "password": "pw", "pid": 1}
    auth = registry_auth.auth_material(tmp_path / "auth", old)
    assert auth == {k: old[k] for k in registry_auth.AUTH_KEYS}
    assert (tmp_path / "auth").stat().st_mode & 0o777 == 0o700


def test_htpasswd_line():
    assert registry_auth.htpasswd_line("imagegate", "$2b$10$abc") == "imagegate:$2b$10$abc\n"


# --- base images -----------------------------------------------------------------------------------


def test_busybox_layout():
    dirs, links = images.busybox_layout(["/bin/busybox", "/linuxrc", "/bin/sh", "/usr/sbin/chroot", "", "/sbin/x/y"])
    assert links == ["bin/sh", "usr/sbin/chroot", "sbin/x/y"]
    assert {"sbin/x", "home/app", "usr/sbin", "root"} <= dirs and "" not in dirs


def test_busybox_tar_is_reproducible_and_complete(tmp_path):
    a, b = tmp_path / "a.tar", tmp_path / "b.tar"
    images.write_busybox_tar(b"\x7fELF fake", ["/bin/sh", "/usr/bin/env"], a)
    images.write_busybox_tar(b"\x7fELF fake", ["/bin/sh", "/usr/bin/env"], b)
    assert a.read_bytes() == b.read_bytes()
    with tarfile.open(a) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert members["bin/sh"].issym() and members["bin/sh"].linkname == "/bin/busybox"
        assert members["tmp"].mode == 0o1777 and members["root"].mode == 0o700
        assert members["home/app"].uid == 1000 and members["bin/busybox"].mode == 0o755
        assert {m.mtime for m in members.values()} == {images.TAR_MTIME}
        assert b"app:x:1000:1000" in tar.extractfile("etc/passwd").read()
        assert tar.extractfile("bin/busybox").read() == b"\x7fELF fake"


@pytest.mark.parametrize(
    ("banner", "version"),
    [("BusyBox v1.35.0 (Debian 1:1.35.0-4+b3) multi-call binary.", "1.35.0"), ("BusyBox v1.36", "1.36"),
     ("nothing", None)],
)
def test_busybox_version(banner, version):
    assert images.busybox_version(banner) == version


def test_pushed_digest():
    out = "abc: Pushed\n1.35.0: digest: sha256:" + "a" * 64 + " size: 527\n"
    assert images.pushed_digest(out) == "sha256:" + "a" * 64
    assert images.pushed_digest("no digest here") is None


def _elf(path: Path, *, is64: bool, interp: bool, little: bool = True) -> str:
    e = "<" if little else ">"
    ident = b"\x7fELF" + bytes([2 if is64 else 1, 1 if little else 2]) + b"\0" * 10
    phoff = 64 if is64 else 52
    if is64:
        head = ident + b"\0" * (0x20 - 16) + struct.pack(e + "Q", phoff) + b"\0" * (0x36 - 0x28)
    else:
        head = ident + b"\0" * (0x1C - 16) + struct.pack(e + "I", phoff) + b"\0" * (0x2A - 0x20)
    head += struct.pack(e + "HH", 8, 2)
    head = head.ljust(phoff, b"\0")
    phdrs = struct.pack(e + "I", 1).ljust(8, b"\0") + struct.pack(e + "I", 3 if interp else 1).ljust(8, b"\0")
    path.write_bytes(head + phdrs)
    return str(path)


@pytest.mark.parametrize("is64", [True, False])
@pytest.mark.parametrize("little", [True, False])
def test_is_static_elf(tmp_path, is64, little):
    assert images.is_static_elf(_elf(tmp_path / "s", is64=is64, interp=False, little=little))
    assert not images.is_static_elf(_elf(tmp_path / "d", is64=is64, interp=True, little=little))
    (tmp_path / "t").write_text("#!/bin/sh\n")
    assert not images.is_static_elf(str(tmp_path / "t"))
    assert not images.is_static_elf(str(tmp_path / "missing"))


def test_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("IMAGEGATE_CACHE_DIR", str(tmp_path))
    assert images.cache_dir() == tmp_path
    monkeypatch.delenv("IMAGEGATE_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", "/xdg")
    assert images.cache_dir() == Path("/xdg/imagegate/base")


def test_python_cache_entry_picks_newest_complete(tmp_path):
    def entry(stem: str, created: str, size_ok: bool = True, packages: list[str] | None = None) -> None:
        tar = tmp_path / f"{stem}.tar"
        tar.write_bytes(b"x" * 10)
        info = {"tarball": str(tar), "size": 10 if size_ok else 11, "created": created, "python_version": "3.11.2",
                "packages": list(python_rootfs.PACKAGES) if packages is None else packages}
        (tmp_path / f"{stem}.json").write_text(json.dumps(info))

    entry("python-3.11.2-bookworm-20240101", "2024-01-01T00:00:00+00:00")
    entry("python-3.11.2-bookworm-20250101", "2025-01-01T00:00:00+00:00")
    entry("python-3.11.2-bookworm-20260101", "2026-01-01T00:00:00+00:00", size_ok=False)  # truncated tar
    entry("python-3.11.2-bookworm-20260601", "2026-06-01T00:00:00+00:00", packages=["python3"])  # other packages
    (tmp_path / "python-3.11.9-bookworm-20270101.json").write_text("{not json")
    assert python_rootfs.python_cache_entry(tmp_path)["created"].startswith("2025")
    assert python_rootfs.python_cache_entry(tmp_path / "empty") is None


# --- mirror, mounts ---------------------------------------------------------------------------------

DEB822 = """Types: deb
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main

Types: deb
URIs: http://security.example/debian-security
Suites: bookworm-security
Components: main

Types: deb-src
URIs: http://src.example/debian
Suites: bookworm
"""


def test_mirror_parsers():
    assert python_rootfs.deb822_bookworm_uris(DEB822) == [
        "http://mirror.example/debian", "http://security.example/debian-security"
    ]
    text = "# c\ndeb [arch=amd64 signed-by=/k.gpg] https://m.example/debian/ bookworm main\n"
    text += "deb http://o bullseye main\n"
    assert python_rootfs.list_bookworm_uris(text) == ["https://m.example/debian/"]


@pytest.mark.parametrize(
    ("uris", "mirror"),
    [
        (["http://security.example/d", "https://m.example/debian/"], "https://m.example/debian"),
        (["file:///local", "cdrom:x"], python_rootfs.DEFAULT_MIRROR),
        ([], "http://deb.debian.org/debian"),
    ],
)
def test_pick_mirror(uris, mirror):
    assert python_rootfs.pick_mirror(uris) == mirror


def test_mounts_inside():
    mounts = (
        "proc /proc proc rw 0 0\n"
        "none /c/.build/rootfs/proc proc rw 0 0\n"
        "none /c/.build/rootfs/dev/pts devpts rw 0 0\n"
        "none /c/.build/rootfs2 tmpfs rw 0 0\n"
        "none /c/.build/rootfs/with\\040space tmpfs rw 0 0\n"
    )
    assert python_rootfs.mounts_inside(mounts, Path("/c/.build/rootfs")) == [
        "/c/.build/rootfs/with space", "/c/.build/rootfs/dev/pts", "/c/.build/rootfs/proc"
    ]


# --- host and /proc parsing ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "debian"),
    [('ID=debian\nVERSION_ID="12"\n', True), ('ID=ubuntu\nID_LIKE=debian\n', True),
     ('ID="rhel"\nID_LIKE="fedora"\n', False), ('ID_LIKE="ubuntu debian"\n', True), ("", False)],
)
def test_os_release_is_debian(text, debian):
    assert host.os_release_is_debian(text) is debian


def test_parse_cmdline_and_stat():
    assert procs.parse_cmdline(b"/usr/bin/x\0--flag\0a b\0") == ["/usr/bin/x", "--flag", "a b"]
    assert procs.parse_cmdline(b"") == []
    stat = "123 (a) b) weird) S 1 123 123 0 -1 4194560 " + " ".join(str(i) for i in range(30))
    assert procs.stat_field(stat, 0) == "S"
    assert procs.stat_field(stat, 19) == stat.rsplit(")", 1)[1].split()[19]


def test_proc_matches_this_process():
    pid = os.getpid()
    rec = {"pid": pid, "cmdline": procs.proc_cmdline(pid), "starttime": procs.proc_starttime(pid)}
    assert procs.proc_matches(rec)
    assert not procs.proc_matches({**rec, "cmdline": ["something", "else"]})
    assert not procs.proc_matches({**rec, "starttime": "1"})
    assert not procs.proc_matches(None) and not procs.proc_matches({"pid": 0})


def test_tail(tmp_path):
    log = tmp_path / "log"
    log.write_text("".join(f"line {i}\n" for i in range(40)))
    assert host.tail(log, 2) == "    line 38\n    line 39"
    (tmp_path / "empty").write_text("")
    assert host.tail(tmp_path / "empty") == "    (log is empty)"
    assert host.tail(tmp_path / "missing").startswith("(no log: ")


def test_say_prefix_and_voice(capsys):
    host.set_voice("k8s", detach_closed_stdout=False)
    try:
        host.say("hello")
    finally:
        host.set_voice("stack", detach_closed_stdout=True)
    host.say("again")
    assert capsys.readouterr().out == "[k8s] hello\n[stack] again\n"


def test_run_errors_are_stack_errors():
    with pytest.raises(host.StackError, match="command not found"):
        host.run(["/nonexistent/command"])
    with pytest.raises(host.StackError, match=r"false failed \(exit 1\)"):
        host.run(["false"], what="false")
    assert host.run(["false"], check=False).returncode == 1


def test_sha256_file(tmp_path):
    (tmp_path / "f").write_bytes(b"abc")
    assert host.sha256_file(tmp_path / "f") == (
        "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )

