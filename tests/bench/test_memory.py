"""``bench/memory.py`` at a tiny size on the session's Ray cluster: that it runs and that its
figures hang together, not what they are."""

from __future__ import annotations

import pytest

from tests.bench.bench_run import run_in_process

TINY = [
    *("--patients", "2", "--size", "600", "400", "--images", "6", "18"),
    *("--train-scale", "0.125", "--train-batch-sizes", "4", "2", "2", "--batches", "1"),
    *("--train-models", "mobilenetv2", "unet", "fasterrcnn_mobilenet"),
    *("--train-patients", "3", "--train-source", "320", "192", "--cpus-per-worker", "1"),
]


@pytest.mark.slow
def test_memory_reports_prepare_and_training_peaks(ray_local, capsys, monkeypatch) -> None:
    result = run_in_process("memory.py", TINY, capsys, monkeypatch)
    small, big = result["prepare"]
    assert big["times"] > small["times"]  # the same files listed more times over
    for task, count in small["images"].items():
        assert count > 0 and big["images"][task] * small["times"] == count * big["times"]
    for run in (small, big):
        assert run["processes"] >= 1 and run["hwm_reset"]
        assert 0 < run["peak_uss_mb"] <= run["peak_rss_mb"]
        assert 0 < run["peak_pss_mb"] <= run["peak_rss_mb"]
    assert result["prepare_peak_rss_mb"] == [small["peak_rss_mb"], big["peak_rss_mb"]]
    assert result["ratio"] == pytest.approx(big["peak_rss_mb"] / small["peak_rss_mb"], abs=1e-3)
    assert set(result["train"]) == {"classification", "segmentation", "detection"}
    sizes = {"classification": 28, "segmentation": 64, "detection": 128}
    for task, run in result["train"].items():
        assert run["size"] == sizes[task] and run["train_rows"] >= run["batch_size"]
        assert run["processes"] == 1  # one Train worker
        assert 0 < run["peak_uss_mb"] <= run["peak_rss_mb"]
        # the worker's own lifetime peak is at least the peak watched since the job began
        assert run["reported_peak_rss_mb"] >= 0.5 * run["peak_rss_mb"]
        assert result["train_peak_rss_mb"][task] == run["reported_peak_rss_mb"]
