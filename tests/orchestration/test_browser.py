"""What a person sees: headless Chromium on ``mammobench ui`` after a tiny benchmark, then on its
``report.html``. Screenshots of every step go to the test's folder and to /tmp/browser-shots."""

from __future__ import annotations

import itertools
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import Page, expect, sync_playwright

from orchestration.benchmark import BenchmarkJob, run_benchmark
from orchestration.results import tracking
from orchestration.results.report import write_report
from orchestration.settings import Settings
from search_spaces.benchmarks import load_benchmark

CHROMIUM = Path("/usr/bin/chromium")  # Debian's, installed by `make test-deps`
SHOTS_COPY = Path("/tmp/browser-shots")  # a fixed place to look at them after a run
WAIT = 60_000  # ms: the MLflow UI is a React app that loads its runs after the page
ONE_SWEEP = """description: one tiny classification sweep, for the browser
defaults:
  samples: 1
  max_epochs: 2
  scheduler: fifo
  fix: {lr: 1.0e-3, batch_size: 16}
  train: {bootstrap: 50}
runs:
  - {model: mobilenetv2, task: classification, settings: [scratch]}
"""


def test_a_person_sees_the_runs_tree_a_metric_chart_the_roc_and_the_report(
    prepared_small: Path, tmp_path: Path, ray_local: str
) -> None:
    assert CHROMIUM.is_file(), f"no {CHROMIUM}: `make test-deps` installs Debian's chromium"
    home, shots = tmp_path / "home", tmp_path / "shots"
    bench = tmp_path / "browser.yaml"
    bench.write_text(ONE_SWEEP)
    settings = Settings(home, f"sqlite:///{home / 'mlflow.db'}", str(home / "ray"), None)
    job = BenchmarkJob(load_benchmark(bench), data=prepared_small, name="seen")
    result = run_benchmark(job, settings, echo=lambda _: None)
    assert result["failed"] == []
    client = tracking.client_for(settings.tracking_uri)
    report = write_report(client, job.experiment, Path(result["folder"]), home, result["run_id"])
    exp_id = client.get_experiment_by_name(job.experiment).experiment_id
    (sweep,) = tracking.find_runs(client, exp_id, {tracking.KIND_TAG: "sweep"})
    (trial,) = tracking.find_runs(client, exp_id, {tracking.KIND_TAG: "trial"})
    names = ("seen", sweep.info.run_name, trial.info.run_name)

    with _mammobench_ui(home) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.set_default_timeout(WAIT)
        try:
            _open_experiment(page, url, job.experiment, shots)
            _expand_tree(page, names, shots)
            _metric_chart(page, trial.info.run_name, "val_auc", shots)
            _roc_artifact(page, shots)
            _report(page, report, shots)
        except BaseException:
            _shot(page, shots, "failed")
            raise
        finally:
            browser.close()


@contextmanager
def _mammobench_ui(home: Path) -> Iterator[str]:
    """``mammobench ui`` on ``home``'s store; yields the URL it prints once it answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    exe = Path(sys.executable).parent / "mammobench"
    proc = subprocess.Popen(
        [exe, "ui", "--port", str(port)],
        env={**os.environ, "MAMMOBENCH_HOME": str(home)},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        url = re.search(r"https?://\S+", proc.stdout.readline()).group(0)
        deadline = time.monotonic() + 60
        while not _answers(f"http://127.0.0.1:{port}/health"):
            assert time.monotonic() < deadline, "mammobench ui did not answer in 60 s"
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


def _shot(page: Page, folder: Path, name: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=folder / f"{name}.png")
    SHOTS_COPY.mkdir(parents=True, exist_ok=True)
    shutil.copy(folder / f"{name}.png", SHOTS_COPY / f"{name}.png")


def _open_experiment(page: Page, url: str, experiment: str, shots: Path) -> None:
    """From the printed URL to the experiment, as a person clicks: it must open on its runs
    (the model-training runs table), not on MLflow's GenAI overview of traces and tokens."""
    page.goto(url)  # the URL `mammobench ui` printed: the newest experiment's runs
    expect(page.get_by_role("heading", name="Runs")).to_be_visible(timeout=WAIT)
    expect(page.get_by_role("link", name=experiment).first).to_be_visible()
    expect(page.get_by_role("columnheader", name="Run Name").first).to_be_visible(timeout=WAIT)
    _shot(page, shots, "1-experiment")
    assert "workflowType=genai" not in page.url, f"opened in the GenAI view: {page.url}"
    expect(page.get_by_text("Token Usage")).to_have_count(0)


def _expand_tree(page: Page, names: tuple[str, str, str], shots: Path) -> None:
    """Benchmark -> sweep -> trial: each child row appears when its parent's row is expanded."""
    for parent, child in itertools.pairwise(names):
        expect(page.get_by_role("link", name=child, exact=True)).to_have_count(0)
        cell = page.get_by_role("gridcell").filter(
            has=page.get_by_role("link", name=parent, exact=True)
        )
        cell.get_by_role("button").click()  # the row's "+" expander
        expect(page.get_by_role("link", name=child, exact=True)).to_be_visible(timeout=WAIT)
    column = "[role=gridcell][col-id='attributes.`{}`']".format
    expect(page.locator(column("Source"), has_text="mammobench")).to_have_count(3)
    expect(page.locator(column("Dataset"), has_text="cbis-ddsm-classification-")).to_have_count(2)
    registered = page.locator(column("Models"), has_text="mammobench-mobilenetv2-classification")
    expect(registered).to_have_count(1)  # the sweep's row links its registered model
    _shot(page, shots, "2-runs-tree")


def _metric_chart(page: Page, trial: str, metric: str, shots: Path) -> None:
    """The trial's page, its model-metrics tab: a line chart of ``metric`` per epoch."""
    page.get_by_role("link", name=trial, exact=True).click()
    expect(page.get_by_role("heading", name=trial)).to_be_visible(timeout=WAIT)
    page.get_by_role("tab", name="Model metrics").click()
    page.get_by_placeholder("Search metric charts").fill(metric)
    card = (
        page.locator("div")
        .filter(has=page.get_by_text(metric, exact=True))
        .filter(has=page.locator(".js-plotly-plot"))
        .filter(has_not=page.get_by_text(f"best_{metric}", exact=True))  # its own card only
        .last
    )
    expect(card.locator(".js-plotly-plot")).to_be_visible(timeout=WAIT)
    expect(card.locator("path.js-line")).not_to_have_count(0)
    _shot(page, shots, "3-metric-chart")


def _roc_artifact(page: Page, shots: Path) -> None:
    """The trial's artifacts tab lists plots/roc_curve.png and previews the image."""
    page.get_by_role("tab", name="Artifacts").click()
    page.get_by_text("plots", exact=True).click()
    page.get_by_text("roc_curve.png", exact=True).click()
    expect(page.get_by_text("plots/roc_curve.png", exact=True)).to_be_visible(timeout=WAIT)
    image = page.locator("img[src^='blob:']").first
    expect(image).to_be_visible(timeout=WAIT)
    assert image.evaluate("img => img.complete && img.naturalWidth") > 100
    _shot(page, shots, "4-roc-artifact")


def _report(page: Page, report: Path, shots: Path) -> None:
    """The benchmark's report.html: its title, the leaderboard with the trained row."""
    page.goto(report.as_uri())
    expect(page.get_by_role("heading", name="mammobench: seen", level=1)).to_be_visible()
    expect(page.get_by_role("heading", name="Leaderboard", level=2)).to_be_visible()
    board = page.locator("table.board")
    expect(board).to_be_visible()
    expect(board.get_by_role("cell", name="mobilenetv2", exact=True)).to_be_visible()
    _shot(page, shots, "5-report")
