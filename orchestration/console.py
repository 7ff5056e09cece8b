"""The console of the long verbs (``prepare``, ``train``, ``tune``, ``benchmark``): a short
progress display for a person, everything else in a log file.

Ray, Ray Data, Tune and the libraries write to the process's stdout and stderr: worker logs
forwarded to the driver, execution plans, status tables, warnings, pycocotools' tables.
``captured`` points file descriptors 1 and 2 (and ``sys.stdout``/``sys.stderr``) at a log file, so
all of it, C-level writes included, lands there; the command talks to the person through the
``Console`` it yields, on the terminal the process started with. With ``verbose`` nothing is
redirected. A terminal gets a live progress bar (rich); other output (CI, ``| tee``) gets one line
per event, so a whole ``make demo`` stays a few hundred lines.
"""

from __future__ import annotations

import io
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TextIO

_CURRENT: Console | None = None  # the console of this process's running verb (Tune's callback)


def current() -> Console | None:
    """The console of the running verb, or None (library use, tests calling functions)."""
    return _CURRENT


def log_path(folder: Path, verb: str) -> Path:
    """``folder/<verb>-<time>.log``: one log per invocation, never overwritten."""
    return folder / f"{verb}-{time.strftime('%Y%m%d-%H%M%S')}.log"


class Console:
    """Progress of a command: sweeps and trials started and done, the best so far, elapsed time
    and an estimate of what is left. Thread-safe (a benchmark runs sweeps in threads)."""

    def __init__(self, stream: TextIO, live: bool | None = None) -> None:
        self.stream = stream
        self.live = stream.isatty() if live is None else live
        self._lock = threading.RLock()
        self._start = time.monotonic()
        self._sweeps = self._sweeps_done = self._trials_done = 0
        self._running: set[str] = set()
        self._sweeps_started: float | None = None
        self._bar = None

    def say(self, text: str) -> None:
        """One event line (above the live bar on a terminal)."""
        with self._lock:
            if self._bar is not None:
                self._refresh()  # the bar under the line shows the counts it reports
                self._bar.console.print(text, markup=False, highlight=False)
            else:
                self.stream.write(f"[{_clock(self.elapsed)}] {text}\n")
                self.stream.flush()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._start

    def plan(self, sweeps: int) -> None:
        """``sweeps`` sweeps are about to run: start counting (and the live bar)."""
        with self._lock:
            self._sweeps, self._sweeps_started = sweeps, time.monotonic()
            if self.live and self._bar is None:
                self._bar = _live_bar(self.stream, sweeps)
            self._refresh()

    def trial_started(self, trial: str) -> None:
        with self._lock:
            self._running.add(trial)
            self._refresh()

    def trial_done(self, sweep: str, trial: str, text: str) -> None:
        """A trial ended: ``text`` says how (metric and epochs, or its error)."""
        with self._lock:
            self._running.discard(trial)
            self._trials_done += 1
            self.say(f"  {sweep}: trial {trial} {text}")

    def sweep_done(self, text: str) -> None:
        """A sweep ended (trained, skipped or failed): ``text`` says how."""
        with self._lock:
            self._sweeps_done += 1
            self.say(f"{text}  [{self.status()}]")

    def status(self) -> str:
        """``sweeps 3/9, 1 trial running, 5 done, ETA ~6m``."""
        parts = [f"sweeps {self._sweeps_done}/{self._sweeps}"] if self._sweeps else []
        parts.append(f"{len(self._running)} trial(s) running, {self._trials_done} done")
        eta = self._eta()
        if eta is not None:
            parts.append(f"ETA ~{_clock(eta)}")
        return ", ".join(parts)

    def _eta(self) -> float | None:
        if not (self._sweeps_done and self._trials_done) or self._sweeps_started is None:
            return None
        spent = time.monotonic() - self._sweeps_started
        return spent / self._sweeps_done * (self._sweeps - self._sweeps_done)

    def _refresh(self) -> None:
        if self._bar is not None:
            task = self._bar.task_ids[0]
            self._bar.update(task, completed=self._sweeps_done, description=self.status())

    def close(self) -> None:
        with self._lock:
            if self._bar is not None:
                self._bar.stop()
                self._bar = None


def _live_bar(stream: TextIO, total: int):
    from rich.console import Console as RichConsole
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    bar = Progress(
        SpinnerColumn(),
        BarColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=RichConsole(file=stream),
        transient=True,
        redirect_stdout=False,  # Python's own prints belong in the log file, as fd 1's do
        redirect_stderr=False,
    )
    bar.add_task("", total=total)
    bar.start()
    return bar


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


@contextmanager
def captured(log: Path, verbose: bool = False) -> Iterator[Console]:
    """Run a verb with its libraries' output in ``log`` (path said once); yield its console.
    ``verbose``: nothing redirected, everything on the terminal as before."""
    global _CURRENT
    stream, owned = _terminal(sys.stdout)
    console = Console(stream)
    _CURRENT = console
    try:
        if verbose:
            yield console
            return
        log.parent.mkdir(parents=True, exist_ok=True)
        console.say(f"logs of Ray, Ray Data and the libraries: {log} (--verbose shows them)")
        with _redirected(log):
            yield console
    finally:
        console.close()
        _CURRENT = None
        if owned:
            stream.close()


def _terminal(stdout: TextIO) -> tuple[TextIO, bool]:
    """A stream to the person's terminal that survives fd 1 being pointed at the log: a dup of
    fd 1 when ``stdout`` is the process's own, else ``stdout`` itself (a test runner's buffer)."""
    with suppress(io.UnsupportedOperation, AttributeError, ValueError):
        if stdout.fileno() == 1:
            stdout.flush()
            return os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8"), True
    return stdout, False


@contextmanager
def _redirected(log: Path) -> Iterator[None]:
    """fds 1 and 2 and ``sys.stdout``/``sys.stderr`` into ``log``; restored after, and an error's
    traceback still reaches the terminal (Python prints it once the fds are back)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    streams = sys.stdout, sys.stderr
    with open(log, "a", buffering=1, encoding="utf-8") as file:
        os.dup2(file.fileno(), 1)
        os.dup2(file.fileno(), 2)
        sys.stdout = sys.stderr = file
        try:
            yield
        finally:
            file.flush()
            sys.stdout, sys.stderr = streams
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
