"""Acceptance through the UI, as a person would: `dagster dev` on the repository's workspace.yaml,
a headless Chromium (Debian's package, driven by Playwright) opens the asset graph, fills the
transfer request in the launchpad of `submit_transfer_job`, launches it, and waits until the
transfer run the sensor starts has succeeded. Screenshots of the graph and of the finished run
go to a temporary folder (set FINK_SCREENSHOTS_DIR=docs/screenshots to refresh the docs' copies).

Everything is real: a generated archive and a managed embedded broker in a temporary
FINK_PIPELINE_HOME, a temporary DAGSTER_HOME with the repository's dagster.yaml, Spark local.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]
NIGHT = dt.date(2024, 3, 1)
REQUEST_YAML = ('ops: {submit_transfer: {config: {start: "%s", stop: "2024-03-01", '
                'classes: ["SN candidate", "Unknown"], content: ["light"]}}}')

pytestmark = [pytest.mark.spark, pytest.mark.kafka]


def _graphql(port: int, query: str, variables: dict | None = None) -> dict:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())["data"]


RUNS_QUERY = """query Runs($job: String!) { runsOrError(filter: {pipelineName: $job}) {
  ... on Runs { results { runId status tags { key value } } } } }"""


def _runs(port: int, job: str) -> list[dict]:
    return _graphql(port, RUNS_QUERY, {"job": job})["runsOrError"]["results"]


def _wait(predicate, timeout_s: float, what: str, interval_s: float = 1.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def _dismiss_welcome(page, timeout_ms: int = 15_000) -> None:
    """The first visit shows a "Join the Dagster community" dialog: skip it. On a busy machine
    it can appear late, over the launchpad: `_click_past_welcome` skips it there too."""
    skip = page.get_by_role("button", name="Skip")
    try:
        skip.first.wait_for(timeout=timeout_ms)
    except Exception:  # not shown (already dismissed in this browser profile)
        return
    skip.first.click()


def _click_past_welcome(page, locator, attempts: int = 4) -> None:
    """Click `locator`; when the welcome dialog covers it, skip the dialog and click again."""
    for attempt in range(attempts):
        try:
            locator.click(timeout=15_000)
            return
        except Exception:
            if attempt == attempts - 1:
                raise
            _dismiss_welcome(page, timeout_ms=2_000)


def launch(page, base: str, run_config_yaml: str, fresh: bool = False) -> None:
    """Open the submit job's launchpad, replace the scaffolded config, launch, land on the run."""
    page.goto(f"{base}/locations/fink_pipeline/jobs/submit_transfer_job/playground")
    editor = page.locator(".CodeMirror").first
    editor.wait_for()
    if fresh:  # the scaffolded form: defaults filled in, the required dates flagged
        page.get_by_text("Missing required config entries ['start', 'stop']").first.wait_for()
        page.get_by_text("ra_col").first.wait_for()  # the catalogue cross-match fields are on the form
    _click_past_welcome(page, editor)
    page.keyboard.press("Control+A")
    page.keyboard.press("Delete")
    page.keyboard.insert_text(run_config_yaml)  # no key events: the editor's auto-closing stays out
    page.get_by_role("button", name="Launch Run").click()
    page.wait_for_url("**/runs/**")


@pytest.fixture
def dagster_dev(tmp_path):
    """`dagster dev` on a free port with a temporary DAGSTER_HOME and FINK_PIPELINE_HOME."""
    from fink_pipeline.archive.generate import generate_archive
    from fink_pipeline.kafka.broker import find_free_port, start_managed, stop_managed
    from fink_pipeline.surveys import get_survey

    state, dagster_home = tmp_path / "state", tmp_path / "dagster_home"
    dagster_home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", dagster_home / "dagster.yaml")
    generate_archive(get_survey("ztf"), str(state / "archive"), NIGHT, nights=1, alerts_per_night=400, seed=5,
                     with_cutouts=False)
    start_managed(state)
    port = find_free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FINK_", "DAGSTER_"))}
    env.update(FINK_PIPELINE_HOME=str(state), DAGSTER_HOME=str(dagster_home), FINK_DEPLOYMENT="local",
               PYSPARK_PYTHON=sys.executable)
    log = open(tmp_path / "dagster_dev.log", "wb")
    # Own session: `dagster dev` ignores SIGTERM sent to it alone (dagster notes, gotcha 8);
    # the whole process group (webserver, daemon, code server, run workers) is ended below.
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("dagster")), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1",
         "-p", str(port)],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        def answering():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2):
                    return True
            except OSError:
                assert process.poll() is None, (tmp_path / "dagster_dev.log").read_text()[-3000:]
                return False

        _wait(answering, 120, "dagster dev to answer")
        yield port, tmp_path
    finally:
        for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                break
            try:
                process.wait(grace)
                break
            except subprocess.TimeoutExpired:
                continue
        log.close()
        stop_managed(state)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (scripts/run setup installs it as root)")
def test_launch_a_transfer_from_the_launchpad(dagster_dev):
    playwright_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright package (dev extra)")
    port, tmp_path = dagster_dev
    base = f"http://127.0.0.1:{port}"
    shots = tmp_path / "screenshots"
    shots.mkdir()
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 900})
            page.set_default_timeout(60_000)
            # the asset graph of the transfer group
            page.goto(f"{base}/locations/fink_pipeline/asset-groups/transfer")
            _dismiss_welcome(page)
            for name in ("transfer_request", "selected_alerts", "alert_topic", "alert_table"):
                page.get_by_text(name, exact=True).first.wait_for()
            page.screenshot(path=str(shots / "asset_graph.png"))

            # a request that fails validation: the run fails with the CLI's message
            launch(page, base, REQUEST_YAML % "2024-03-05", fresh=True)
            page.get_by_text("stop (2024-03-01) is before start (2024-03-05); swap them").first.wait_for()

            # a valid request: the submit run, then the transfer run the sensor starts
            launch(page, base, REQUEST_YAML % "2024-03-01")
            submit = _wait(lambda: [r for r in _runs(port, "submit_transfer_job") if r["status"] == "SUCCESS"],
                           90, "the valid submission to succeed")[0]
            assert submit["status"] == "SUCCESS"
            topic = {t["key"]: t["value"] for t in submit["tags"]}["fink/topic"]
            # the sensor launches the transfer of that partition; it runs Spark -> Kafka -> Delta
            transfer = _wait(lambda: [r for r in _runs(port, "transfer_job") if r["status"] in
                                      ("SUCCESS", "FAILURE", "CANCELED")], 180, "the transfer run to finish")[0]
            tags = {t["key"]: t["value"] for t in transfer["tags"]}
            assert tags["dagster/partition"] == topic
            assert transfer["status"] == "SUCCESS", transfer
            page.goto(f"{base}/runs/{transfer['runId']}")
            page.get_by_text("RUN_SUCCESS").first.wait_for()
            page.screenshot(path=str(shots / "transfer_run.png"))
        finally:
            browser.close()
    table = tmp_path / "state" / "tables" / topic
    assert (table / "_delta_log").is_dir()
    keep = os.environ.get("FINK_SCREENSHOTS_DIR")
    if keep:
        for shot in shots.iterdir():
            shutil.copy(shot, Path(keep) / shot.name)
