"""Running a bench script from a test: in a subprocess (without Ray or MLflow) or in-process on the
session's Ray cluster, and reading its final JSON line."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
WITHOUT_RAY = (  # a GPU machine may have neither: the step functions must not need them
    "import sys, runpy; sys.modules['ray'] = sys.modules['mlflow'] = None; "
    "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
)


def last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


def run_in_process(script: str, args: list[str], capsys, monkeypatch) -> dict:
    """Run a bench script here (on the session's Ray cluster), as ``python bench/SCRIPT`` would
    (its folder on ``sys.path``), and parse its JSON line."""
    monkeypatch.setattr(sys, "argv", [script, *args])
    monkeypatch.syspath_prepend(str(REPO / "bench"))
    runpy.run_path(str(REPO / "bench" / script), run_name="__main__")
    return last_json(capsys.readouterr().out)
