"""The pure parts of scripts/localstack/spark_parts.py (the cluster's Spark groundwork): cache layout and stamps,
PyPI answers and the verified download, the sdist's unpacking, cache keys, and the Spark image's entrypoint
contract (run with bash, its tini replaced by a stub that prints the command it would run).

No network beyond an in-process HTTP server on 127.0.0.1, no root, no Docker, no Go.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import shutil
import subprocess
import tarfile
import threading
from pathlib import Path

import pytest
from localstack import go_tools, k8s_binaries, spark_parts
from localstack.host import StackError

SPARK_DIR = spark_parts.SPARK_DIR


@pytest.fixture
def cache(monkeypatch, tmp_path) -> Path:
    monkeypatch.setenv("IMAGEGATE_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


# --- layout and stamps -------------------------------------------------------------------------------


def test_every_part_has_its_own_directory_under_tools(cache):
    tools = cache / "tools"
    assert spark_parts.kube_proxy_path() == tools / "kube-proxy" / k8s_binaries.K8S_VERSION / "bin" / "kube-proxy"
    assert go_tools.tool_path("coredns") == tools / "coredns" / "v1.15.0" / "bin" / "coredns"
    assert spark_parts.operator_path() == tools / "spark-operator" / "v2.5.2" / "bin" / "spark-operator"
    tar, meta = spark_parts.base_paths()
    assert tar.parent == meta.parent == tools / "spark-image" / "4.3.0-bookworm"
    assert tar.name == f"base-{spark_parts.base_key()}.tar" and meta.suffix == ".json"
    # kube-proxy never writes into the Kubernetes build, whose stamp and five binaries `k8s.py up` checks
    assert k8s_binaries.version_dir() not in spark_parts.kube_proxy_path().parents
    assert "kube-proxy" not in k8s_binaries.BINARIES and "kube-proxy" not in k8s_binaries.tools_go()


def test_kube_proxy_is_built_like_the_cluster_binaries():
    assert spark_parts.kube_proxy_stamp() == {"version": "v1.28.15", "ldflags": k8s_binaries.ldflags()}
    assert spark_parts.kube_proxy_tools_go().count("k8s.io/kubernetes/cmd/") == 1
    assert '_ "k8s.io/kubernetes/cmd/kube-proxy"' in spark_parts.kube_proxy_tools_go()


def test_operator_stamp_names_module_version_and_flags():
    stamp = spark_parts.operator_stamp()
    assert stamp["spec"] == "github.com/kubeflow/spark-operator/v2@v2.5.2"
    assert "k8s.io/component-base/version.gitVersion=v2.5.2" in str(stamp["ldflags"])


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ('{"version": "v1", "ldflags": "x", "go": "go1.26", "seconds": 3}', True),
        ('{"version": "v1", "ldflags": "y"}', False),  # built with other flags: rebuild
        ('{"version": "v1"}', False),
        ('["version"]', False),
        ("not json", False),
    ],
)
def test_stamp_matches(tmp_path, text, ok):
    (tmp_path / "build.json").write_text(text)
    assert spark_parts._stamp_matches(tmp_path / "build.json", {"version": "v1", "ldflags": "x"}) is ok
    assert spark_parts._stamp_matches(tmp_path / "missing.json", {"version": "v1"}) is False


def test_module_download(tmp_path):
    (tmp_path / "go.mod").write_text("module github.com/kubeflow/spark-operator/v2\n")
    assert spark_parts.module_download({"Dir": str(tmp_path), "Sum": "h1:abc="}) == (tmp_path, "h1:abc=")
    for bad in ({"Error": "not found"}, {"Dir": str(tmp_path)}, {"Dir": str(tmp_path / "nope"), "Sum": "h1:x"},
                {"Dir": str(tmp_path), "Sum": "sha256:x"}):
        with pytest.raises(StackError):
            spark_parts.module_download(bad)


def test_ensure_rejects_unknown_parts():
    with pytest.raises(StackError, match="unknown part 'spark'"):
        spark_parts.ensure("spark")
    with pytest.raises(SystemExit):
        spark_parts.main(["coredns-1.0"])


# --- PyPI ----------------------------------------------------------------------------------------------

SHA = "ab" * 32
ENTRY = {"filename": "pyspark-4.3.0.tar.gz", "url": "../../packages/p.tar.gz", "size": 10, "digests": {"sha256": SHA}}


def test_pypi_file_reads_the_version_and_the_project_document():
    version_doc = {"info": {"version": "4.3.0"}, "urls": [{"filename": "other.whl"}, ENTRY]}
    project_doc = {"info": {"version": "9.9"}, "urls": [], "releases": {"4.3.0": [ENTRY], "4.2.1": []}}
    assert spark_parts.pypi_file(version_doc, "4.3.0", "pyspark-4.3.0.tar.gz") == ENTRY
    assert spark_parts.pypi_file(project_doc, "4.3.0", "pyspark-4.3.0.tar.gz") == ENTRY
    with pytest.raises(StackError, match="no pyspark-4.3.0.tar.gz"):
        spark_parts.pypi_file(project_doc, "4.2.1", "pyspark-4.3.0.tar.gz")


@pytest.mark.parametrize(
    "entry",
    [
        {**ENTRY, "digests": {}},
        {**ENTRY, "digests": {"sha256": "AB" * 32}},
        {**ENTRY, "digests": {"sha256": SHA[:-2]}},
        {**ENTRY, "size": "10"},
    ],
)
def test_pypi_file_refuses_an_entry_without_a_usable_digest_and_size(entry):
    with pytest.raises(StackError, match="without a sha256"):
        spark_parts.pypi_file({"releases": {"4.3.0": [entry]}}, "4.3.0", "pyspark-4.3.0.tar.gz")


@pytest.fixture
def served():
    """An in-process HTTP server on 127.0.0.1 answering GET /f with whatever ``served.body`` holds."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Length", str(len(server.body)))
            self.end_headers()
            self.wfile.write(server.body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.body = b""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_download_verified_keeps_only_the_listed_bytes(served, tmp_path):
    data = os.urandom(3 << 20)
    served.body = data
    url = f"http://127.0.0.1:{served.server_address[1]}/f"
    dest = tmp_path / "p.tar.gz"
    spark_parts.download_verified(url, dest, len(data), hashlib.sha256(data).hexdigest())
    assert dest.read_bytes() == data

    for size, sha, match in ((len(data), "00" * 32, "sha256"), (len(data) - 1, SHA, "more than"),
                             (len(data) + 1, hashlib.sha256(data).hexdigest(), "bytes with")):
        other = tmp_path / f"x-{size}-{sha[:4]}"
        with pytest.raises(StackError, match=match):
            spark_parts.download_verified(url, other, size, sha)
        assert not other.exists() and not other.with_name(other.name + ".part").exists()


def test_a_cached_download_needs_no_network(cache, monkeypatch):
    monkeypatch.setenv("IMAGEGATE_PYPI_URL", "https://127.0.0.1:9/unreachable")
    vdir = cache / "tools" / "pyspark" / "4.3.0"
    vdir.mkdir(parents=True)
    (vdir / "p.tar.gz").write_bytes(b"0123456789")
    (vdir / "p.tar.gz.json").write_text(json.dumps({"size": 10, "sha256": SHA, "url": "https://x"}))
    path, stamp = spark_parts.ensure_pypi_file("pyspark", "4.3.0", "p.tar.gz")
    assert path == vdir / "p.tar.gz" and stamp["sha256"] == SHA
    (vdir / "p.tar.gz").write_bytes(b"012345678")  # truncated: not a hit, and PyPI is unreachable
    with pytest.raises(StackError, match="cannot read https://127.0.0.1:9/unreachable/pyspark/4.3.0/json"):
        spark_parts.ensure_pypi_file("pyspark", "4.3.0", "p.tar.gz")
    monkeypatch.setenv("IMAGEGATE_PYPI_URL", "http://pypi.example")
    with pytest.raises(StackError, match="must be an https:// URL"):
        spark_parts.ensure_pypi_file("pyspark", "4.3.0", "p.tar.gz")


# --- the sdist -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "target"),
    [
        ("pyspark-4.3.0/deps/bin/spark-submit", "bin/spark-submit"),
        ("pyspark-4.3.0/deps/jars/spark-core_2.13-4.3.0.jar", "jars/spark-core_2.13-4.3.0.jar"),
        ("pyspark-4.3.0/lib/pyspark.zip", "python/lib/pyspark.zip"),
        ("pyspark-4.3.0/deps", None),
        ("pyspark-4.3.0/pyspark/sql/functions.py", None),
        ("pyspark-4.3.0/setup.py", None),
    ],
)
def test_sdist_target(name, target):
    assert spark_parts.sdist_target(name, "pyspark-4.3.0") == target


@pytest.mark.parametrize(
    "name",
    ["other/deps/bin/x", "pyspark-4.3.0/deps/../../etc/passwd", "/pyspark-4.3.0/deps/x", "pyspark-4.3.0//deps/x",
     "pyspark-4.3.0/deps/./x", "pyspark-4.3.0/deps\\..\\x"],
)
def test_sdist_target_refuses_paths_that_could_leave_the_spark_home(name):
    with pytest.raises(StackError, match="unexpected path"):
        spark_parts.sdist_target(name, "pyspark-4.3.0")


def _sdist(path: Path, members: list[tuple[str, bytes | None, int]], symlink: str | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data, mode in members:
            info = tarfile.TarInfo(name)
            info.mode = mode
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        if symlink:
            info = tarfile.TarInfo(symlink)
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)
    return path


SPARK_HOME_MEMBERS = [
    ("pyspark-4.3.0", None, 0o755),
    ("pyspark-4.3.0/deps/bin/spark-submit", b"#!/bin/sh\n", 0o755),
    ("pyspark-4.3.0/deps/bin/spark-class", b"#!/bin/sh\n", 0o775),
    ("pyspark-4.3.0/deps/jars/spark-kubernetes_2.13-4.3.0.jar", b"PK", 0o666),
    ("pyspark-4.3.0/lib/pyspark.zip", b"PK", 0o644),
    ("pyspark-4.3.0/lib/py4j-0.10.9.9-src.zip", b"PK", 0o644),
    ("pyspark-4.3.0/pyspark/__init__.py", b"", 0o644),
]


def test_unpack_spark_home(tmp_path):
    sdist = _sdist(tmp_path / "s.tar.gz", SPARK_HOME_MEMBERS)
    home = tmp_path / "home"
    assert spark_parts.unpack_spark_home(sdist, home, "pyspark-4.3.0") == 5
    assert sorted(str(p.relative_to(home)) for p in home.rglob("*") if p.is_file()) == [
        "bin/spark-class", "bin/spark-submit", "jars/spark-kubernetes_2.13-4.3.0.jar", "python/lib/py4j-0.10.9.9-src.zip",
        "python/lib/pyspark.zip",
    ]
    assert (home / "bin/spark-submit").stat().st_mode & 0o777 == 0o755
    assert (home / "bin/spark-class").stat().st_mode & 0o777 == 0o755  # no group write
    assert (home / "jars/spark-kubernetes_2.13-4.3.0.jar").stat().st_mode & 0o777 == 0o644
    spark_parts.check_spark_home(home)

    (home / "python/lib/py4j-0.10.9.9-src.zip").unlink()
    (home / "bin/spark-submit").unlink()
    with pytest.raises(StackError, match=r"lacks bin/spark-submit, exactly one python/lib/py4j-\*-src.zip"):
        spark_parts.check_spark_home(home)


def test_unpack_refuses_links_and_foreign_paths(tmp_path):
    linked = _sdist(tmp_path / "l.tar.gz", SPARK_HOME_MEMBERS, symlink="pyspark-4.3.0/deps/jars/evil.jar")
    with pytest.raises(StackError, match="neither a file nor a directory"):
        spark_parts.unpack_spark_home(linked, tmp_path / "h1", "pyspark-4.3.0")
    foreign = _sdist(tmp_path / "f.tar.gz", [*SPARK_HOME_MEMBERS, ("pyspark-4.3.0/../x", b"", 0o644)])
    with pytest.raises(StackError, match="unexpected path"):
        spark_parts.unpack_spark_home(foreign, tmp_path / "h2", "pyspark-4.3.0")
    assert not (tmp_path / "x").exists()


# --- keys, user, JAVA_HOME --------------------------------------------------------------------------


def test_cache_keys_change_with_every_input():
    assert spark_parts.base_key() == spark_parts.base_key(spark_parts.BASE_PACKAGES, "bookworm")
    assert spark_parts.base_key() != spark_parts.base_key((*spark_parts.BASE_PACKAGES, "curl"))
    assert spark_parts.base_key() != spark_parts.base_key(suite="trixie")
    sources = {"entrypoint.sh": b"a", "words.txt": b"b"}
    key = spark_parts.image_key("sha256:1", SHA, sources)
    assert key == spark_parts.image_key("sha256:1", SHA, dict(reversed(sources.items())))
    assert len({key, spark_parts.image_key("sha256:2", SHA, sources), spark_parts.image_key("sha256:1", "0" * 64, sources),
                spark_parts.image_key("sha256:1", SHA, {**sources, "words.txt": b"c"}),
                spark_parts.image_key("sha256:1", SHA, {"entrypoint.sha": b"a", "words.txt": b"b"})}) == 5


def test_the_image_key_covers_every_file_of_the_spark_directory():
    assert sorted(spark_parts.spark_sources()) == sorted(p.name for p in SPARK_DIR.iterdir() if p.is_file())


def test_add_spark_user_once(tmp_path):
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (etc / "group").write_text("root:x:0:\n")
    (etc / "shadow").write_text("root:*:19000:0:99999:7:::\n")
    for _ in range(2):
        spark_parts.add_spark_user(tmp_path)
    assert (etc / "passwd").read_text().splitlines()[1:] == ["spark:x:185:185:spark:/nonexistent:/usr/sbin/nologin"]
    assert (etc / "group").read_text().splitlines()[1:] == ["spark:x:185:"]
    assert (etc / "shadow").read_text().count("spark:") == 1


def test_java_home_in(tmp_path):
    (tmp_path / "etc/alternatives").mkdir(parents=True)
    link = tmp_path / "etc/alternatives/java"
    link.symlink_to("/usr/lib/jvm/java-17-openjdk-amd64/bin/java")
    assert spark_parts.java_home_in(tmp_path) == "/usr/lib/jvm/java-17-openjdk-amd64"
    link.unlink()
    link.symlink_to("/opt/evil/java")
    with pytest.raises(StackError, match="unexpected java alternative"):
        spark_parts.java_home_in(tmp_path)


# --- the entrypoint contract ---------------------------------------------------------------------------

EXECUTOR_ENV = {
    "SPARK_EXECUTOR_MEMORY": "1g", "SPARK_DRIVER_URL": "spark://CoarseGrainedScheduler@drv:7078",
    "SPARK_EXECUTOR_ID": "2", "SPARK_EXECUTOR_CORES": "1", "SPARK_APPLICATION_ID": "spark-app-1",
    "SPARK_EXECUTOR_POD_IP": "10.0.0.9", "SPARK_RESOURCE_PROFILE_ID": "0", "SPARK_EXECUTOR_POD_NAME": "wc-exec-2",
}


@pytest.fixture
def entrypoint(tmp_path):
    """Run the image's entrypoint.sh with its tini replaced by a stub printing one argument per line."""
    bash = shutil.which("bash")
    if not bash:
        pytest.skip("bash is needed to run the entrypoint")
    text = (SPARK_DIR / "entrypoint.sh").read_text()
    assert text.count("\ntini=/usr/bin/tini\n") == 1  # the one line this fixture replaces
    stub = tmp_path / "tini"
    stub.write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done\n')
    stub.chmod(0o755)
    script = tmp_path / "entrypoint.sh"
    script.write_text(text.replace("\ntini=/usr/bin/tini\n", f"\ntini={stub}\n"))
    workdir = tmp_path / "work"
    workdir.mkdir()

    def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        base = {"PATH": os.environ["PATH"], "SPARK_HOME": "/opt/spark", "JAVA_HOME": "/jvm"}
        return subprocess.run([bash, str(script), *args], env={**base, **env}, cwd=workdir, capture_output=True,
                              text=True, timeout=30)

    run.workdir = workdir  # type: ignore[attr-defined]
    return run


def test_driver_runs_spark_submit_in_client_mode_bound_to_the_pod_ip(entrypoint):
    proc = entrypoint("driver", "--properties-file", "/opt/spark/conf/spark.properties", "--class",
                      "org.apache.spark.deploy.PythonRunner", "local:///opt/spark/work-dir/wordcount.py",
                      SPARK_DRIVER_BIND_ADDRESS="10.0.0.5")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "-s", "--", "/opt/spark/bin/spark-submit",
        "--conf", "spark.driver.bindAddress=10.0.0.5", "--conf", "spark.executorEnv.SPARK_DRIVER_POD_IP=10.0.0.5",
        "--deploy-mode", "client",
        "--properties-file", "/opt/spark/conf/spark.properties", "--class", "org.apache.spark.deploy.PythonRunner",
        "local:///opt/spark/work-dir/wordcount.py",
    ]


def test_executor_runs_the_kubernetes_executor_backend(entrypoint):
    opts = {f"SPARK_JAVA_OPT_{i}": f"-Dopt{i}=v {i}" for i in (10, 2, 0, 1)}
    proc = entrypoint("executor", **EXECUTOR_ENV, **opts, SPARK_CLASSPATH="/extra/a.jar")
    assert proc.returncode == 0, proc.stderr
    argv = proc.stdout.splitlines()
    assert argv[:3] == ["-s", "--", "/jvm/bin/java"]
    assert argv[3:7] == ["-Dopt0=v 0", "-Dopt1=v 1", "-Dopt2=v 2", "-Dopt10=v 10"]  # numeric order, spaces kept
    assert argv[7:9] == ["-Xms1g", "-Xmx1g"]
    assert argv[9] == "-cp"
    assert argv[10] == f"/opt/spark/conf:/extra/a.jar:/opt/spark/jars/*:{entrypoint.workdir}"
    assert argv[11:] == [
        "org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend",
        "--driver-url", EXECUTOR_ENV["SPARK_DRIVER_URL"], "--executor-id", "2", "--cores", "1",
        "--app-id", "spark-app-1", "--hostname", "10.0.0.9", "--resourceProfileId", "0", "--podName", "wc-exec-2",
    ]


def test_executor_classpath_has_no_empty_entry_and_keeps_the_official_order(entrypoint):
    proc = entrypoint("executor", **EXECUTOR_ENV, SPARK_CONF_DIR="/conf", HADOOP_CONF_DIR="/hadoop",
                      SPARK_EXTRA_CLASSPATH="/x.jar", SPARK_DIST_CLASSPATH="/dist/*")
    argv = proc.stdout.splitlines()
    classpath = argv[argv.index("-cp") + 1]
    assert classpath == f"/conf:/hadoop:/opt/spark/jars/*:/x.jar:{entrypoint.workdir}:/dist/*"
    assert "" not in classpath.split(":")


@pytest.mark.parametrize("missing", sorted(EXECUTOR_ENV))
def test_executor_names_a_missing_variable(entrypoint, missing):
    env = {k: v for k, v in EXECUTOR_ENV.items() if k != missing}
    proc = entrypoint("executor", **env)
    assert proc.returncode == 64 and proc.stdout == ""
    assert f"{missing} is not set" in proc.stderr


def test_driver_needs_its_bind_address(entrypoint):
    proc = entrypoint("driver", "x.py")
    assert proc.returncode == 64 and "SPARK_DRIVER_BIND_ADDRESS is not set" in proc.stderr


def test_other_commands_pass_through(entrypoint):
    proc = entrypoint("printf", "%s|", "a b", "--master")
    assert (proc.returncode, proc.stdout) == (0, "a b|--master|")


def test_strip_setuid_clears_only_the_special_bits_of_files(tmp_path):
    (tmp_path / "usr/bin").mkdir(parents=True)
    for name, mode in (("su", 0o4755), ("wall", 0o2755), ("ls", 0o755), ("sticky", 0o1755)):
        (tmp_path / "usr/bin" / name).write_text("")
        (tmp_path / "usr/bin" / name).chmod(mode)
    (tmp_path / "usr/bin/link").symlink_to("su")
    (tmp_path / "tmp").mkdir(mode=0o1777)
    (tmp_path / "tmp").chmod(0o1777)
    assert spark_parts.strip_setuid(tmp_path) == ["usr/bin/su", "usr/bin/wall"]
    modes = {p.name: p.lstat().st_mode & 0o7777 for p in (tmp_path / "usr/bin").iterdir() if not p.is_symlink()}
    assert modes == {"su": 0o755, "wall": 0o755, "ls": 0o755, "sticky": 0o1755}
    assert (tmp_path / "tmp").stat().st_mode & 0o7777 == 0o1777
    assert spark_parts.strip_setuid(tmp_path) == []
