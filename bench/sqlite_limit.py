"""The physical limit on this machine: how fast SQLite itself commits.

``python -m bench sqlite-limit [--seconds 3] [--dir DIR]`` measures, on a fresh file in
WAL mode (as Legato uses it):

- commits per second of a one-row transaction at ``synchronous=FULL`` and ``NORMAL``
  (BEGIN IMMEDIATE; INSERT; COMMIT, back to back, one thread);
- rows per second when one transaction inserts 100 rows (the shape of a group commit).

A step in Legato costs at least one durable commit unless outcomes share a commit, so
the FULL rate bounds W2 (one run at a time) and the batch rate bounds W1.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import tempfile
import time
from typing import Any

ROW = "x" * 200


def _connect(path: str, synchronous: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, body TEXT)")
    return conn


def commit_rate(directory: str, synchronous: str, seconds: float) -> float:
    path = os.path.join(directory, f"commit-{synchronous}.db")
    conn = _connect(path, synchronous)
    n = 0
    deadline = time.perf_counter() + seconds
    t0 = time.perf_counter()
    while time.perf_counter() < deadline:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO t (body) VALUES (?)", (ROW,))
        conn.execute("COMMIT")
        n += 1
    rate = n / (time.perf_counter() - t0)
    conn.close()
    return rate


def batch_rows_rate(directory: str, synchronous: str, seconds: float, rows: int = 100) -> float:
    path = os.path.join(directory, f"batch-{synchronous}.db")
    conn = _connect(path, synchronous)
    n = 0
    deadline = time.perf_counter() + seconds
    t0 = time.perf_counter()
    while time.perf_counter() < deadline:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT INTO t (body) VALUES (?)", [(ROW,)] * rows)
        conn.execute("COMMIT")
        n += rows
    rate = n / (time.perf_counter() - t0)
    conn.close()
    return rate


def measure(seconds: float = 3.0, directory: str | None = None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="sqlite-limit-", dir=directory) as d:
        return {
            "sqlite": sqlite3.sqlite_version,
            "directory": directory or tempfile.gettempdir(),
            "commits_per_s_full": commit_rate(d, "FULL", seconds),
            "commits_per_s_normal": commit_rate(d, "NORMAL", seconds),
            "rows_per_s_batch100_full": batch_rows_rate(d, "FULL", seconds),
        }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench sqlite-limit")
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--dir", default=None, help="where the test files go (default: tmp)")
    args = p.parse_args(argv)
    result = measure(args.seconds, args.dir)
    print(json.dumps(result, indent=2))
    print(
        f"SQLite {result['sqlite']} (WAL): {result['commits_per_s_full']:,.0f} commits/s at "
        f"FULL, {result['commits_per_s_normal']:,.0f} at NORMAL; one 100-row commit: "
        f"{result['rows_per_s_batch100_full']:,.0f} rows/s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
