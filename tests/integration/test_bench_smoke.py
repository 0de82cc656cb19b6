"""The benchmark harness in smoke mode: every engine runs every workload without error.

``python -m bench --smoke`` runs tiny sizes once on Legato (SQLite), DBOS (SQLite) and the
Temporal dev server (when its CLI is installed). It installs the ``bench`` extra first if
an import is missing. Speed is never asserted here: only that no engine errors.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Generous: on a fresh machine the first run installs the bench extra from PyPI.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def test_smoke_mode_runs_every_engine_without_error(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=880,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    [result_file] = list(tmp_path.glob("*-smoke.json"))
    summary = json.loads(result_file.read_text())
    assert summary["complete"] is True
    engines = summary["engines"]
    assert set(engines) == {"legato-sqlite", "dbos-sqlite", "temporal"}
    ran = {name: e for name, e in engines.items() if not e.get("skipped")}
    assert {"legato-sqlite", "dbos-sqlite"} <= set(ran), engines
    for name, engine in ran.items():
        for workload in ("w1", "w2", "w3", "w4", "w5"):
            entry = engine["workloads"][workload]
            assert entry["status"] in ("ok", "n/a"), (name, workload, entry)
            assert not entry.get("errors"), (name, workload, entry)
    # W5 goes through Legato's HTTP API (`legato serve`): measured, not n/a.
    w5 = engines["legato-sqlite"]["workloads"]["w5"]
    assert w5["status"] == "ok", w5
    assert w5["median"]["samples"] == 3
    assert w5["median"]["p50_ms"] > 0
    assert engines["dbos-sqlite"]["workloads"]["w4"]["median"]["fired"] == 20
    w4 = engines["legato-sqlite"]["workloads"]["w4"]["median"]
    assert w4["fired"] == 20
    assert w4["peak_rss_mb"] > 0
    assert "| legato-sqlite |" in (tmp_path / result_file.name).with_suffix(".md").read_text()
