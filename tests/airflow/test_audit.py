"""The image audit against a real Airflow 3.3 deployment: the Images page, its JSON, access control,
``imagegate audit``, and a real browser.

The deployment: a multi-team Airflow home (the simple auth manager with real users; DAG bundle ``alpha``
belongs to team alpha, bundle ``beta`` to team beta), DAG runs made with ``airflow dags test`` against
the local stack (one run passed, one passed under a waiver, one refused next to a passing task), then a
real ``airflow api-server`` on the same SQLite database with the plugin loaded through its entry point.

Users: ``admin`` (admin: every DAG) and ``alice`` (viewer in team alpha: Airflow itself refuses her the
beta DAG). That is Airflow's own per-DAG access control: the simple auth manager's roles grant no
per-DAG rights, its multi-team mode does (a DAG's team is its bundle's).

The browser: Debian's chromium and chromedriver with Selenium, headless; screenshots go to the pytest
temp dir (``audit-screens``).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

import imagegate
from airflow_plugin.audit._html import Links
from tests.airflow.conftest import AIRFLOW, ROOT, push_image
from tests.integration.conftest import Stack, unique
from tests.support.airflow_services import AirflowServices

pytestmark = pytest.mark.integration

PASSWORDS = {"admin": "admin-pw-7f3a", "alice": "alice-pw-91c2"}
ALPHA = {"audit_passed", "audit_waived"}
EXPIRES = (dt.date.today() + dt.timedelta(days=365)).isoformat()

_DAG = '''
from airflow.sdk import dag
import pendulum
from airflow_plugin import ContainerTask

OPTIONS = {{"auto_remove": "success", "mount_tmp_dir": False}}


@dag(dag_id="{dag_id}", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False)
def audited():
{tasks}


audited()
'''
_TASK = '    ContainerTask(task_id="{task_id}", image="{image}", command=["echo", "{task_id}"], backend="docker", docker_options=OPTIONS)'


@dataclass
class Audit:
    services: AirflowServices
    registry: str
    repo: str
    digests: dict[str, str]  # etl, vendor, rooty -> the pushed manifest digest
    image_ids: dict[str, str]  # etl, vendor -> what the engine calls the image (its config digest)
    tokens: dict[str, str]
    env: dict[str, str]

    def get(self, path: str, user: str = "admin", **params: Any) -> httpx.Response:
        return httpx.get(f"{self.services.url}{path}", params=params, timeout=30,
                         headers={"Authorization": f"Bearer {self.tokens[user]}"} if user else {})

    def runs(self, user: str = "admin", **params: Any) -> list[dict[str, Any]]:
        response = self.get("/imagegate/api/runs", user, **params)
        assert response.status_code == 200, response.text
        return list(response.json()["runs"])


def _dag(folder: Path, dag_id: str, tasks: dict[str, str]) -> None:
    body = "\n".join(_TASK.format(task_id=task, image=image) for task, image in tasks.items())
    (folder / f"{dag_id}.py").write_text(_DAG.format(dag_id=dag_id, tasks=body))


@pytest.fixture(scope="module")
def audit(stack: Stack, docker_client: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Audit]:
    root = tmp_path_factory.mktemp("audit")
    home, alpha, beta = root / "home", root / "alpha", root / "beta"
    for folder in (home, alpha, beta):
        folder.mkdir()
    repo = unique("audit")
    reg = stack.registry
    digests = {
        "etl": push_image(docker_client, stack, f"{repo}/etl", "1.0.0", "etl"),
        "vendor": push_image(docker_client, stack, f"{repo}/vendor", "2.0.0", "vendor", user="0"),
        "rooty": push_image(docker_client, stack, f"{repo}/rooty", "latest", "rooty", user="0"),
    }
    etl, vendor, rooty = f"{reg}/{repo}/etl:1.0.0", f"{reg}/{repo}/vendor:2.0.0", f"{reg}/{repo}/rooty:latest"
    _dag(alpha, "audit_passed", {"etl": etl})
    _dag(alpha, "audit_waived", {"vendor": vendor, "etl": etl})
    _dag(beta, "audit_refused", {"rooty": rooty, "etl": etl})
    (alpha / "imagegate.toml").write_text(
        f'[[waivers]]\nreference = "{reg}/{repo}/vendor"\nchecks = ["non-root"]\n'
        f'reason = "vendor image runs as root; ticket OPS-12"\nexpires = {EXPIRES}\n'
    )
    (beta / "imagegate.toml").write_text("# the defaults\n")
    passwords = root / "passwords.json"
    passwords.write_text(json.dumps(PASSWORDS))
    bundles = [{"name": name, "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
                "kwargs": {"path": str(path)}, "team_name": name} for name, path in (("alpha", alpha), ("beta", beta))]
    settings = {
        "AIRFLOW__CORE__MULTI_TEAM": "True",
        "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps(bundles),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,alice:viewer:alpha",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
    }
    env = {**os.environ, **stack.env, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "PYTHONPATH": str(ROOT), **settings}
    for name in ("IMAGEGATE_BACKEND", "AIRFLOW__IMAGEGATE__CLUSTER_POLICY", "AIRFLOW__IMAGEGATE__POLICY"):
        env.pop(name, None)

    def airflow(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([str(AIRFLOW), *args], env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
        assert not check or done.returncode == 0, f"airflow {' '.join(args)}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done

    airflow("db", "migrate")
    airflow("teams", "sync")
    airflow("dags", "test", "audit_passed", "-B", "alpha")
    airflow("dags", "test", "audit_waived", "-B", "alpha")
    airflow("dags", "test", "audit_refused", "-B", "beta", check=False)  # a refused task fails its run
    services = AirflowServices(airflow=AIRFLOW, home=home, dags=alpha, env=env, components=("api-server",), extra_env=settings)
    try:
        services.start()
        tokens = {user: services.token(user, password) for user, password in PASSWORDS.items()}
        image_ids = {name: docker_client.images.get(f"{reg}/{repo}/{name}@{digests[name]}").id for name in ("etl", "vendor")}
        yield Audit(services, reg, repo, digests, image_ids, tokens, env)
    finally:
        services.stop()


def _tasks(runs: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(r["dag_id"], r["task_id"]) for r in runs}


# -- the JSON API ----------------------------------------------------------------------------------------


def test_every_gated_task_is_listed_with_what_it_launched_and_why(audit: Audit) -> None:
    runs = {(r["dag_id"], r["task_id"]): r for r in audit.runs()}
    assert set(runs) == {("audit_passed", "etl"), ("audit_waived", "vendor"), ("audit_waived", "etl"),
                         ("audit_refused", "rooty"), ("audit_refused", "etl")}
    assert {k: r["verdict"] for k, r in runs.items()} == {
        ("audit_passed", "etl"): "passed", ("audit_waived", "vendor"): "waived", ("audit_waived", "etl"): "passed",
        ("audit_refused", "rooty"): "refused", ("audit_refused", "etl"): "passed"}
    for (dag_id, task), run in runs.items():
        assert run["try_number"] == 1 and run["run_id"].startswith("manual__")
        assert run["recorded_at"] is not None
        if run["verdict"] != "refused":
            name = task
            assert run["image"] == f"{audit.registry}/{audit.repo}/{name}:{'1.0.0' if name == 'etl' else '2.0.0'}"
            assert run["pinned"] == f"{run['image']}@{audit.digests[name]}"
            assert run["digest"] == audit.digests[name]
            assert run["launched"] is True and run["state"] == "success"
            assert run["running"] == audit.image_ids[name], "the digest the engine reported running (its image id)"
            assert {c["check"]: c["outcome"] for c in run["checks"]}["non-root"] == ("waived" if name == "vendor" else "pass")
    waived = runs[("audit_waived", "vendor")]
    assert waived["waivers"] == [{"check": "non-root", "reason": "vendor image runs as root; ticket OPS-12", "expires": EXPIRES}]
    refused = runs[("audit_refused", "rooty")]
    assert refused["launched"] is False and refused["running"] is None and refused["state"] == "failed"
    assert refused["image"] == f"{audit.registry}/{audit.repo}/rooty:latest"
    assert {c["check"] for c in refused["checks"] if c["outcome"] == "fail"} >= {"non-root"}
    assert [r["recorded_at"] for r in audit.runs()] == sorted((r["recorded_at"] for r in runs.values()), reverse=True)


def test_a_digest_finds_exactly_the_runs_that_launched_it(audit: Audit) -> None:
    launched_etl = {("audit_passed", "etl"), ("audit_waived", "etl"), ("audit_refused", "etl")}
    assert _tasks(audit.runs(image=audit.digests["etl"])) == launched_etl
    assert _tasks(audit.runs(image=audit.image_ids["etl"])) == launched_etl  # `docker images` shows this id
    assert _tasks(audit.runs(image=audit.image_ids["etl"][7:19])) == launched_etl  # its short form
    assert _tasks(audit.runs(image=f"{audit.registry}/{audit.repo}/etl@{audit.digests['etl']}")) == launched_etl
    assert _tasks(audit.runs(image=f"{audit.registry}/{audit.repo}/vendor")) == {("audit_waived", "vendor")}
    assert _tasks(audit.runs(image=f"{audit.registry}/{audit.repo}/etl:2.0.0")) == set()
    assert _tasks(audit.runs(image="sha256:" + "0" * 64)) == set()
    assert _tasks(audit.runs(verdict="refused")) == {("audit_refused", "rooty")}
    assert _tasks(audit.runs(verdict="waived")) == {("audit_waived", "vendor")}
    assert _tasks(audit.runs(dag_id="audit_waived", verdict="passed")) == {("audit_waived", "etl")}
    assert _tasks(audit.runs(since="1h")) == _tasks(audit.runs())
    assert audit.runs(until="2020-01-01") == []


def test_paging_and_bad_input(audit: Audit) -> None:
    seen, cursor = [], None
    while True:
        page = audit.get("/imagegate/api/runs", limit=2, **({"cursor": cursor} if cursor else {})).json()
        assert len(page["runs"]) <= 2
        seen += [(r["dag_id"], r["task_id"]) for r in page["runs"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert len(seen) == len(set(seen)) == 5
    bad = audit.get("/imagegate/api/runs", image="sha256:1234")
    assert bad.status_code == 400 and bad.json()["detail"]["option"] == "image"
    assert audit.get("/imagegate/api/runs", cursor="bm90IGEgY3Vyc29y").status_code == 400
    assert audit.get("/imagegate/api/runs", limit=1000).status_code == 422
    assert audit.get("/imagegate/api/runs", user="").status_code == 401
    page = httpx.get(f"{audit.services.url}/imagegate/images?image=x", timeout=30)  # no session: to the login page
    assert page.status_code == 303 and page.headers["location"].startswith("/auth/login?next=")
    html = audit.get("/imagegate/images", image="etl 1")
    assert html.status_code == 400 and "is not a digest" in html.text
    assert "script-src" not in html.headers["content-security-policy"] and "default-src 'none'" in html.headers["content-security-policy"]


# -- access control --------------------------------------------------------------------------------------


def test_a_user_who_cannot_read_a_dag_sees_none_of_its_rows(audit: Audit) -> None:
    # Airflow's own answer first: alice may not read the beta DAG at all
    assert audit.get("/api/v2/dags/audit_refused", "alice").status_code == 403
    assert audit.get("/api/v2/dags/audit_passed", "alice").status_code == 200
    assert {r["dag_id"] for r in audit.runs("alice")} == ALPHA
    assert _tasks(audit.runs("alice", image=audit.digests["etl"])) == {("audit_passed", "etl"), ("audit_waived", "etl")}
    assert audit.runs("alice", dag_id="audit_refused") == []
    assert audit.runs("alice", verdict="refused") == []
    refused = next(r for r in audit.runs("admin", verdict="refused"))
    key = {"dag_id": refused["dag_id"], "run_id": refused["run_id"], "task_id": refused["task_id"]}
    assert audit.get("/imagegate/api/task", "admin", **key).status_code == 200
    assert audit.get("/imagegate/api/task", "alice", **key).status_code == 404  # the same as a task with no record
    view = audit.get("/imagegate/task", "alice", **key)
    assert view.status_code == 404 and "rooty" not in view.text
    page = audit.get("/imagegate/images", "alice").text
    assert "audit_refused" not in page and "rooty" not in page and "audit_waived" in page
    assert "audit_refused" in audit.get("/imagegate/images", "admin").text


# -- imagegate audit -------------------------------------------------------------------------------------


def _cli(audit: Audit, *args: str, user: str = "admin", password: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEGATE_AIRFLOW_")}
    env.update({"IMAGEGATE_AIRFLOW_URL": audit.services.url, "IMAGEGATE_AIRFLOW_USERNAME": user,
                "IMAGEGATE_AIRFLOW_PASSWORD": PASSWORDS[user] if password is None else password})
    return subprocess.run([sys.executable, "-m", "imagegate", "audit", *args], env=env, capture_output=True, text=True,
                          timeout=120, cwd=ROOT)


def test_imagegate_audit_prints_the_same_runs(audit: Audit) -> None:
    done = _cli(audit, "--image", audit.digests["etl"], "--json")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["source"] == "plugin"
    assert _tasks(answer["runs"]) == _tasks(audit.runs(image=audit.digests["etl"]))
    assert answer["runs"] == audit.runs(image=audit.digests["etl"])
    text = _cli(audit, "--verdict", "waived")
    assert text.returncode == 0, text.stderr
    assert "audit_waived / manual__" in text.stdout and "WAIVED" in text.stdout
    assert f"waiver   non-root: vendor image runs as root; ticket OPS-12 (until {EXPIRES})" in text.stdout
    alice = json.loads(_cli(audit, "--json", user="alice").stdout)
    assert {r["dag_id"] for r in alice["runs"]} == ALPHA
    nothing = _cli(audit, "--image", "sha256:" + "0" * 64)
    assert nothing.returncode == 1 and "no task instance matched" in nothing.stdout
    refused = _cli(audit, "--json", password="wrong")
    assert refused.returncode == 2 and json.loads(refused.stdout)["error"]["status"] == 401


def test_imagegate_audit_reads_api_v2_alone_with_the_same_answer(audit: Audit) -> None:
    """For an api-server without the plugin: Airflow's public XCom endpoints, filtered by the same rules."""
    for args in (["--image", audit.digests["etl"]], ["--verdict", "refused"], ["--image", f"{audit.registry}/{audit.repo}/vendor"], []):
        for user in ("admin", "alice"):
            plugin = json.loads(_cli(audit, "--json", *args, user=user).stdout)
            public = _cli(audit, "--json", "--api-v2", *args, user=user)
            assert public.returncode in (0, 1), public.stderr
            answer = json.loads(public.stdout)
            assert answer["source"] == "api-v2"
            assert [(r["dag_id"], r["task_id"], r["verdict"], r["running"]) for r in answer["runs"]] == \
                   [(r["dag_id"], r["task_id"], r["verdict"], r["running"]) for r in plugin["runs"]], (args, user)


# -- a real browser --------------------------------------------------------------------------------------


def _browser_unavailable(what: str) -> None:
    message = (f"{what} is not available; `PYTHONPATH=scripts python -m localstack.browser` installs chromium and "
               "chromedriver (make test does), `scripts/env.sh dev` installs selenium")
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _browser_unavailable("selenium")
    binary = os.environ.get("IMAGEGATE_CHROMIUM") or next(
        (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    driver_path = os.environ.get("IMAGEGATE_CHROMEDRIVER") or shutil.which("chromedriver")
    if not binary or not driver_path:
        _browser_unavailable("chromium with chromedriver")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1600,1000",
                "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def screens(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("audit-screens")


def _login(driver: Any, audit: Audit, user: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    driver.delete_all_cookies()
    driver.get(f"{audit.services.url}/")
    wait = WebDriverWait(driver, 60)
    wait.until(ec.presence_of_element_located((By.NAME, "username"))).send_keys(user)
    driver.find_element(By.NAME, "password").send_keys(PASSWORDS[user])
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait.until(lambda d: "/auth/login" not in d.current_url and d.get_cookie("_token"))


def _open_images_from_the_menu(driver: Any) -> None:
    """Browse → Images, as a user would; then into the page's frame."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    wait = WebDriverWait(driver, 60)
    seen: list[str] = []
    for _ in range(8):  # the UI fills the menu from /ui/plugins after the page loads: open it again until it has
        wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "button[aria-label='Browse']"))).click()
        try:
            WebDriverWait(driver, 5).until(
                ec.element_to_be_clickable((By.XPATH, "//*[@role='menuitem'][normalize-space()='Images']"))).click()
            break
        except TimeoutException:
            seen = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "[role=menuitem]")]
            ActionChains(driver).send_keys(Keys.ESCAPE).perform()
    else:
        raise AssertionError(f"the Browse menu has no Images item: {seen}")
    # Airflow's UI route; once the frame has loaded, the UI appends the frame's own path to it
    wait.until(lambda d: "/plugin/imagegate-images" in d.current_url)
    driver.switch_to.frame(wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "iframe[title='Images']"))))
    wait.until(ec.presence_of_element_located((By.ID, "summary")))


def _rows(driver: Any) -> list[tuple[str, str]]:
    from selenium.webdriver.common.by import By

    return sorted((r.get_attribute("data-dag"), r.get_attribute("data-task")) for r in driver.find_elements(By.CSS_SELECTOR, "tr.run"))


def _filter(driver: Any, image: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    field = driver.find_element(By.ID, "f-image")
    field.clear()
    field.send_keys(image)
    old = driver.find_element(By.ID, "summary")
    driver.find_element(By.ID, "f-apply").click()
    WebDriverWait(driver, 30).until(ec.staleness_of(old))
    WebDriverWait(driver, 30).until(ec.presence_of_element_located((By.ID, "summary")))


def test_the_images_page_in_a_real_browser(audit: Audit, browser: Any, screens: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 60)
    _login(browser, audit, "admin")
    _open_images_from_the_menu(browser)
    assert len(_rows(browser)) == 5
    _filter(browser, audit.digests["etl"])
    assert _rows(browser) == sorted([("audit_passed", "etl"), ("audit_refused", "etl"), ("audit_waived", "etl")])
    for cell in browser.find_elements(By.CSS_SELECTOR, "tr.run td.pinned"):
        assert cell.text.replace("\n", "").endswith(audit.digests["etl"])
    browser.switch_to.default_content()
    browser.save_screenshot(str(screens / "images-filtered-by-digest.png"))

    browser.switch_to.frame(browser.find_element(By.CSS_SELECTOR, "iframe[title='Images']"))
    _filter(browser, "")
    waived = browser.find_element(By.CSS_SELECTOR, "tr.run[data-task='vendor']")
    assert "vendor image runs as root; ticket OPS-12" in waived.text and f"until {EXPIRES}" in waived.text
    browser.switch_to.default_content()
    browser.save_screenshot(str(screens / "images.png"))

    # the row's record, inside the page
    browser.switch_to.frame(browser.find_element(By.CSS_SELECTOR, "iframe[title='Images']"))
    browser.find_element(By.CSS_SELECTOR, "tr.run[data-task='vendor'] a.ti-view").click()
    wait.until(ec.presence_of_element_located((By.ID, "ti-title")))
    assert browser.find_element(By.ID, "verdict").text == "waived"
    assert browser.find_element(By.ID, "pinned").text.endswith(audit.digests["vendor"])
    assert browser.find_element(By.ID, "running").text == audit.image_ids["vendor"]
    browser.switch_to.default_content()

    # the task instance's own page in Airflow, on the "Image audit" tab
    refused = imagegate.AuditRow.from_dict(next(r for r in audit.runs(verdict="refused")))
    browser.get(audit.services.url + Links("").airflow(refused))
    frame = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "iframe[title='Image audit']")))
    browser.switch_to.frame(frame)
    wait.until(ec.presence_of_element_located((By.ID, "checks")))
    assert browser.find_element(By.ID, "verdict").text == "refused"
    outcomes = {r.get_attribute("data-check"): r.get_attribute("data-outcome") for r in browser.find_elements(By.CSS_SELECTOR, "tr.check")}
    assert outcomes["non-root"] == "fail"
    assert browser.find_element(By.ID, "running").text == "nothing was launched"
    browser.switch_to.default_content()
    time.sleep(0.5)  # let the tab finish painting for the screenshot
    browser.save_screenshot(str(screens / "task-instance-image-audit.png"))
    assert (screens / "images.png").stat().st_size > 10_000


def test_the_page_shows_a_user_only_the_dags_they_may_read(audit: Audit, browser: Any, screens: Path) -> None:
    _login(browser, audit, "alice")
    _open_images_from_the_menu(browser)
    assert {dag for dag, _ in _rows(browser)} == ALPHA
    _filter(browser, audit.digests["etl"])
    assert _rows(browser) == sorted([("audit_passed", "etl"), ("audit_waived", "etl")])
    from selenium.webdriver.common.by import By

    options = [o.text for o in browser.find_elements(By.CSS_SELECTOR, "#f-dag option")]
    assert "audit_refused" not in options and "audit_passed" in options
    browser.switch_to.default_content()
    browser.save_screenshot(str(screens / "images-as-alice.png"))
