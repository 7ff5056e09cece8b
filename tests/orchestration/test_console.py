"""The long verbs' console: the person's lines on the terminal, everything else in the log."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = """
import logging, os, subprocess, sys, warnings
from pathlib import Path
from orchestration.console import captured

log, verbose = Path(sys.argv[1]), sys.argv[2] == "1"
logging.basicConfig()
with captured(log, verbose) as shown:
    shown.plan(2)
    print("library print")
    os.write(2, b"C-level write\\n")
    subprocess.run([sys.executable, "-c", "print('child process')"], check=True)
    warnings.warn("a deprecation")
    logging.getLogger("ray.data").warning("an execution plan")
    shown.trial_started("t1")
    shown.trial_done("s1", "t1", "done: best val_auc 0.700 (epoch 3)")
    shown.sweep_done("s1: done")
    if len(sys.argv) > 3:
        raise RuntimeError("a real error")
print("after")
"""
NOISE = ("library print", "C-level write", "child process", "a deprecation", "an execution plan")


def _run(
    tmp_path: Path, verbose: bool, fail: bool = False
) -> tuple[subprocess.CompletedProcess, Path]:
    log = tmp_path / "logs" / "verb.log"
    args = [sys.executable, "-c", SCRIPT, str(log), "1" if verbose else "0"] + (
        ["x"] if fail else []
    )
    return subprocess.run(args, capture_output=True, text=True, timeout=60), log


def test_libraries_output_goes_to_the_log_and_the_person_sees_progress(tmp_path: Path) -> None:
    done, log = _run(tmp_path, verbose=False)
    assert done.returncode == 0, done.stderr
    terminal = done.stdout + done.stderr
    assert f"logs of Ray, Ray Data and the libraries: {log}" in terminal
    assert "s1: trial t1 done: best val_auc 0.700 (epoch 3)" in terminal
    assert "s1: done  [sweeps 1/2, 0 trial(s) running, 1 done, ETA ~" in terminal
    assert done.stdout.rstrip().endswith("after")  # the terminal is back after the verb
    for line in NOISE:
        assert line not in terminal
        assert line in log.read_text()
    assert len(terminal.splitlines()) == 4  # the three lines above and "after"


def test_verbose_shows_everything_on_the_terminal(tmp_path: Path) -> None:
    done, log = _run(tmp_path, verbose=True)
    assert done.returncode == 0, done.stderr
    for line in NOISE:
        assert line in done.stdout + done.stderr
    assert not log.exists()


def test_an_error_is_printed_in_full_on_the_terminal(tmp_path: Path) -> None:
    done, _ = _run(tmp_path, verbose=False, fail=True)
    assert done.returncode == 1
    assert "Traceback (most recent call last)" in done.stderr
    assert "RuntimeError: a real error" in done.stderr


def test_on_a_terminal_the_live_bar_keeps_the_noise_in_the_log(tmp_path: Path) -> None:
    """The same verb on a pseudo-terminal: rich's live bar, the event lines above it, the
    libraries' output still in the log, and the terminal intact afterwards."""
    import os
    import pty

    log = tmp_path / "logs" / "verb.log"
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(log), "0"], stdout=follower, stderr=follower
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert proc.wait(timeout=60) == 0
    terminal = b"".join(chunks).decode(errors="replace")
    assert "\x1b[" in terminal  # drawn by rich, not plain lines
    assert "s1: trial t1 done: best val_auc 0.700 (epoch 3)" in terminal
    assert "after" in terminal and "Error" not in terminal
    for line in NOISE:
        assert line not in terminal
        assert line in log.read_text()
