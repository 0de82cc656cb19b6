"""The crash test: SIGKILL a worker process at random moments; nothing is lost or doubled.

A 20-step workflow (a sequence, a 0.3 s wait, a parallel section of two 3-step branches,
another sequence) calls a recording stand-in service on loopback with the built-in
``http_request`` action.  The stand-in applies each effect once per ``Idempotency-Key``
and counts every attempt.  The run is started detached (``legato run --detach``); then,
again and again, a ``legato worker`` process is started and killed with SIGKILL at a
moment drawn from ``random.Random(seed)``, and the next one is started:

* a *step kill* is aimed at the n-th effect (n = 1..20, each once), at a seeded choice
  of two moments: 0-100 ms after the call that applied it arrived at the stand-in (which
  takes 20-60 ms per call: the kill lands during the call, or during the commit, claim or
  call that follow, or during the wait), or 0-12 ms after the stand-in began to answer it
  (the kill lands while the worker reads the answer and commits the outcome).  When
  effect n was applied in an earlier life, the anchor is this worker's first call, the
  re-execution of the step cut off last time;
* a *startup kill* (5 of them, at seeded places before the last step kill) lands 20-600 ms after
  spawn, while the worker imports, opens the store or recovers its dead predecessor's
  leases (the CLI takes ~0.6 s to be ready).

Anchoring step kills on progress, not on the time since spawn, spreads the kills over the
whole run whatever the interpreter's start-up time, and keeps the run unfinished until
the last planned kill.  A last worker runs ``--until-idle``.

Then: the run completed; each of the 20 steps applied its effect exactly once, under one
stable key; each step has exactly one StepCompleted in the history and its recorded
output is the stand-in's response for that one effect; ``legato verify`` finds the hash
chain intact.  Every step cut off by a kill was executed again (the stand-in saw its key
twice or more and answered the repeat from its record), which proves the kills hit work
in flight; the re-execution came right after the next worker started (the dead worker's
leases were released at once, not waited out).

The seed is in the test id and in every failure message; run one seed with
``LEGATO_CRASH_SEED=1234 .venv/bin/pytest tests/integration/test_crash.py -s`` (``-s``
prints the report: kills by phase, re-executions, recovery times).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.standins import Call, Recorder

pytestmark = pytest.mark.slow

# One seed by default (each takes 20-30 s, mostly interpreter start-ups); more with
# LEGATO_CRASH_SEED=1,2,3.
SEEDS = [int(s) for s in os.environ.get("LEGATO_CRASH_SEED", "20240501").split(",") if s.strip()]
MIN_KILLS = 20  # kills that must land while the run is unfinished
STARTUP_KILLS = 5
STARTUP_DELAY = (0.02, 0.6)  # seconds after spawn (the CLI takes ~0.5-0.8 s to be ready)
CALL_OFFSET = (0.0, 0.1)  # seconds after the anchor call arrived at the stand-in
ANSWER_OFFSET = (0.0, 0.012)  # seconds after the stand-in began to answer it
LATENCY = (0.02, 0.06)  # the stand-in's time per call, after it applied the effect
# The default lease: a step cut off by a kill is resumed at once only because the next
# worker releases the dead worker's leases (the test checks it resumed before they expire).
LEASE_SECONDS = 30.0
ANCHOR_TIMEOUT = 20.0  # seconds after a worker is ready; shorter than a lease
READY_TIMEOUT = 20.0
FINAL_TIMEOUT = 60.0

# The steps: s01-s07, a wait, a parallel section (left: s08-s10, right: s11-s13), s14-s20.
SEQUENCE_1 = [f"s{i:02d}" for i in range(1, 8)]
LEFT = [f"s{i:02d}" for i in range(8, 11)]
RIGHT = [f"s{i:02d}" for i in range(11, 14)]
SEQUENCE_2 = [f"s{i:02d}" for i in range(14, 21)]
STEP_PATHS = [
    *SEQUENCE_1,
    *(f"fan[left].{s}" for s in LEFT),
    *(f"fan[right].{s}" for s in RIGHT),
    *SEQUENCE_2,
]
assert len(STEP_PATHS) == 20


# -- the workflow ------------------------------------------------------------------------


def _task(url: str, name: str, next_state: str | None) -> dict[str, Any]:
    state: dict[str, Any] = {
        "type": "task",
        "action": "http_request",
        "input": {
            "url": f"{url}/effects/{name}",
            "method": "POST",
            "json": {"step": name, "amount": int(name[1:])},
            "timeout": "5s",
        },
        "timeout": "10s",
    }
    if next_state is None:
        state["end"] = True
    else:
        state["next"] = next_state
    return state


def _chain(url: str, names: list[str], last_next: str | None) -> dict[str, Any]:
    return {
        name: _task(url, name, names[i + 1] if i + 1 < len(names) else last_next)
        for i, name in enumerate(names)
    }


def workflow(url: str) -> dict[str, Any]:
    states: dict[str, Any] = {}
    states.update(_chain(url, SEQUENCE_1, "pause"))
    states["pause"] = {"type": "wait", "duration": "0.3s", "next": "fan"}
    states["fan"] = {
        "type": "parallel",
        "join": "all",
        "branches": [
            {"name": "left", "start_at": LEFT[0], "states": _chain(url, LEFT, None)},
            {"name": "right", "start_at": RIGHT[0], "states": _chain(url, RIGHT, None)},
        ],
        "next": SEQUENCE_2[0],
    }
    states.update(_chain(url, SEQUENCE_2, None))
    return {
        "name": "crash_twenty",
        "version": "1",
        "description": "20 effects on a recording stand-in, for the crash test",
        "start_at": SEQUENCE_1[0],
        "states": states,
    }


# -- processes -----------------------------------------------------------------------------


def _legato() -> list[str]:
    script = Path(sys.executable).with_name("legato")
    return [str(script)] if script.exists() else [sys.executable, "-m", "legato.cli"]


@dataclass(frozen=True)
class Plan:
    """Where a kill is aimed.  ``startup``: ``offset`` s after spawn.  ``call`` and
    ``answer``: ``offset`` s after the *anchor call* arrived at the stand-in, or after
    the stand-in began to answer it.  The anchor call is the one that applied effect
    number ``target`` if this worker made it, else this worker's first call (a
    re-execution, when effect ``target`` was applied before this worker started)."""

    aim: str
    target: int
    offset: float

    def __str__(self) -> str:
        if self.aim == "startup":
            return f"startup +{self.offset * 1000:.1f} ms"
        return f"effect {self.target} {self.aim} +{self.offset * 1000:.1f} ms"


def kill_plan(seed: int) -> list[Plan]:
    """One kill per effect (aimed during its call or just after its answer, when the
    outcome is being committed), and startup kills at seeded places before the last."""
    rng = random.Random(seed)
    plans = []
    for n in range(1, len(STEP_PATHS) + 1):
        aim = rng.choice(("call", "answer"))
        plans.append(Plan(aim, n, rng.uniform(*(CALL_OFFSET if aim == "call" else ANSWER_OFFSET))))
    for _ in range(STARTUP_KILLS):
        plans.insert(rng.randrange(len(plans)), Plan("startup", 0, rng.uniform(*STARTUP_DELAY)))
    return plans


@dataclass
class Kill:
    number: int
    plan: Plan
    spawned_at: float
    ready_at: float | None  # None: killed before it said it was ready
    killed_at: float
    run_status: str = ""  # the run's status and
    last_seq: int = 0  # number of events just after the kill
    leases: dict[str, float] = field(default_factory=dict)  # work key -> lease expiry (epoch)
    in_flight: list[Call] = field(default_factory=list)  # calls cut off mid-way
    uncommitted: list[Call] = field(default_factory=list)  # answered, outcome not yet durable

    def classify(self, calls: list[Call]) -> None:
        """Which calls the kill cut off, or whose answered outcome it kept from the store
        (the same key was called again after the kill)."""
        mine = [c for c in calls if c.received_at > self.spawned_at]
        self.in_flight = [c for c in mine if c.in_flight_at(self.killed_at)]
        cut = {c.idempotency_key for c in self.in_flight}
        again = {c.idempotency_key for c in calls if c.received_at > self.killed_at} - cut
        self.uncommitted = [
            c
            for c in mine
            if c.answering_at is not None
            and c.answering_at <= self.killed_at
            and c.idempotency_key in again
        ]

    @property
    def phase(self) -> str:
        if self.ready_at is None:
            return "startup"
        if self.in_flight:
            return "in a call"
        if self.uncommitted:
            return "before a commit"  # answered, but the outcome was not yet committed
        return "between steps"  # claiming, after a commit, or waiting on the timer


@dataclass
class Life:
    spawned_at: float
    ready_at: float | None
    log: Path


class Cluster:
    """Worker processes on one database; every one started is killed or reaped on exit."""

    def __init__(self, tmp: Path, db: Path, env: dict[str, str]) -> None:
        self.tmp, self.db, self.env = tmp, db, env
        self.procs: list[subprocess.Popen[bytes]] = []
        self.lives: list[Life] = []

    def cli(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*_legato(), *args, "--db", str(self.db)],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def spawn(self, *extra: str) -> tuple[subprocess.Popen[bytes], Life]:
        log = self.tmp / f"worker-{len(self.lives) + 1:02d}.log"
        with log.open("wb") as sink:
            spawned = time.monotonic()
            proc = subprocess.Popen(
                [*_legato(), "worker", "--db", str(self.db), *extra],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, killed as one
            )
        self.procs.append(proc)
        life = Life(spawned, None, log)
        self.lives.append(life)
        return proc, life

    def wait_ready(self, proc: subprocess.Popen[bytes], life: Life, until: float) -> bool:
        """Poll the worker's log for its banner until monotonic ``until``; True if seen."""
        while time.monotonic() < until:
            if b"legato worker" in life.log.read_bytes():
                life.ready_at = time.monotonic()
                return True
            if proc.poll() is not None:
                raise AssertionError(
                    f"the worker exited with {proc.returncode} before it was ready:\n"
                    + life.log.read_text(errors="replace")
                )
            time.sleep(0.002)
        return False

    @staticmethod
    def kill(proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL the worker's process group (the worker leads it), then reap it."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)  # reaped: its pid is dead, so the next worker's recovery sees it

    def close(self) -> None:
        # Only processes not reaped yet: a reaped one's pid (and group id) may be reused.
        for proc in self.procs:
            if proc.poll() is None:
                self.kill(proc)


def _anchor_call(recorder: Recorder, life: Life, target: int) -> Call | None:
    # Effects first: a call is recorded with its effect, so the calls read after hold it.
    nth = next((e for e in recorder.effects.values() if e.number == target), None)
    calls = [c for c in recorder.calls if c.received_at > life.spawned_at]
    if not calls or nth is None:
        return None
    if nth.applied_at > life.spawned_at:
        return next((c for c in calls if c.idempotency_key == nth.key), None)
    return calls[0]


def _wait_anchor(
    recorder: Recorder,
    cluster: Cluster,
    proc: subprocess.Popen[bytes],
    life: Life,
    plan: Plan,
    run_id: str,
) -> float | None:
    """The monotonic time the plan's anchor call arrived (``call``) or began to be
    answered (``answer``); None if the run ended first."""
    checked = time.monotonic()
    until = checked + ANCHOR_TIMEOUT
    while time.monotonic() < until:
        call = _anchor_call(recorder, life, plan.target)
        if call is not None and plan.aim == "call":
            return call.received_at
        if call is not None and call.answering_at is not None:
            return call.answering_at
        if proc.poll() is not None:
            raise AssertionError(
                f"worker exited with {proc.returncode}:\n" + life.log.read_text(errors="replace")
            )
        if time.monotonic() - checked > 0.05:
            checked = time.monotonic()
            if _run_row(cluster.db, run_id)[0] != "running":
                return None
        time.sleep(0.0005)
    raise AssertionError(
        f"the anchor of kill {plan} did not come within {ANCHOR_TIMEOUT:g}s of the worker "
        "being ready: is the step cut off by the last kill waiting for its dead worker's "
        "lease to expire (Worker.recover)?"
    )


def _worker_env(lease_seconds: float) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEGATO_")}
    env.update(
        LEGATO_ALLOW_PRIVATE_NETWORKS="true",
        LEGATO_LEASE_SECONDS=str(lease_seconds),
        LEGATO_POLL_INTERVAL="0.05",
        LEGATO_LOG_LEVEL="WARNING",
    )
    return env


def _leases(db: Path) -> dict[str, float]:
    """The leases held (by dead workers, when no worker runs): work key -> expiry."""
    with contextlib.closing(sqlite3.connect(db, timeout=10)) as conn:
        rows = conn.execute(
            "SELECT key, lease_expires_at FROM due_work WHERE lease_owner IS NOT NULL"
        ).fetchall()
    return {str(key): float(expires) for key, expires in rows}


def _run_row(db: Path, run_id: str) -> tuple[str, int]:
    with contextlib.closing(sqlite3.connect(db, timeout=10)) as conn:
        row = conn.execute("SELECT status, last_seq FROM runs WHERE id = ?", (run_id,)).fetchone()
    assert row is not None, f"run {run_id} is not in {db}"
    return str(row[0]), int(row[1])


@pytest.fixture
def recorder(seed: int) -> Iterator[Recorder]:
    with Recorder(latency=LATENCY, seed=seed) as rec:
        yield rec


@pytest.fixture(params=SEEDS, ids=lambda s: f"seed={s}")
def seed(request: pytest.FixtureRequest) -> int:
    return int(request.param)


# -- the test --------------------------------------------------------------------------------


@pytest.mark.timeout(600)  # ~25 s on an idle machine; each worker start-up counts
def test_sigkilled_workers_lose_nothing_and_double_nothing(
    tmp_path: Path, seed: int, recorder: Recorder
) -> None:
    began = time.monotonic()
    where = f"[seed={seed}; rerun with LEGATO_CRASH_SEED={seed}]"
    definition = tmp_path / "crash_twenty.yaml"
    definition.write_text(yaml.safe_dump(workflow(recorder.url), sort_keys=False))
    db = tmp_path / "crash.db"
    cluster = Cluster(tmp_path, db, _worker_env(LEASE_SECONDS))
    kills: list[Kill] = []
    try:
        started = cluster.cli("run", str(definition), "--detach", "--json")
        assert started.returncode == 0, f"{where} legato run --detach: {started.stderr}"
        run_id = json.loads(started.stdout)["run_id"]

        for plan in kill_plan(seed):
            if _run_row(db, run_id)[0] != "running":
                break
            proc, life = cluster.spawn()
            if plan.aim == "startup":
                deadline = life.spawned_at + plan.offset
                cluster.wait_ready(proc, life, deadline)
            else:
                ready = cluster.wait_ready(proc, life, life.spawned_at + READY_TIMEOUT)
                assert ready, f"{where} worker {len(cluster.lives)} was not ready in time"
                anchor = _wait_anchor(recorder, cluster, proc, life, plan, run_id)
                deadline = (anchor or time.monotonic()) + plan.offset
            time.sleep(max(0.0, deadline - time.monotonic()))
            killed_at = time.monotonic()
            cluster.kill(proc)
            kill = Kill(len(kills) + 1, plan, life.spawned_at, life.ready_at, killed_at)
            kill.run_status, kill.last_seq = _run_row(db, run_id)
            kill.leases = _leases(db)
            kills.append(kill)

        proc, life = cluster.spawn("--until-idle")
        try:
            proc.wait(timeout=FINAL_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(
                f"{where} the last worker did not finish the run in {FINAL_TIMEOUT:g}s:\n"
                + life.log.read_text(errors="replace")
            )
        assert proc.returncode == 0, f"{where} last worker: {life.log.read_text()}"

        shown = cluster.cli("show", run_id, "--json")
        history = cluster.cli("history", run_id, "--json")
        verified = cluster.cli("verify", run_id)
    finally:
        cluster.close()
    calls = recorder.calls
    effects = recorder.effects
    for kill in kills:
        kill.classify(calls)
    recovery = _recovery(kills, cluster, calls)
    report = _report(seed, kills, cluster, calls, recovery, time.monotonic() - began)
    print(report)
    where = f"{where}\n{report}"

    # The kills: enough of them, at distinct points drawn from the seed, while the run ran.
    landed = [k for k in kills if k.run_status == "running"]
    assert len(landed) >= MIN_KILLS, f"{where} the run ended after only {len(landed)} kills"
    assert len({k.plan for k in landed}) == len(landed), f"{where} kill points repeat"
    positions = {k.last_seq for k in landed}
    assert len(positions) >= 10, f"{where} the kills hit only {len(positions)} points of the run"
    phases = Counter(k.phase for k in kills)
    assert phases["startup"] >= 1, f"{where} no kill landed while a worker started"
    hit = phases["in a call"] + phases["before a commit"]
    assert hit >= 5, f"{where} only {hit} kills landed before a step's outcome was committed"

    # The run, as the engine recorded it.
    assert shown.returncode == 0, f"{where} legato show: {shown.stderr}"
    result = json.loads(shown.stdout)
    assert result["status"] == "completed", f"{where} {result['status']}: {result['error']}"
    views = {s["id"]: s for s in result["steps"]}
    assert all(s["status"] == "completed" for s in result["steps"]), (
        f"{where} {[(s['id'], s['status']) for s in result['steps']]}"
    )
    tasks = [s["id"] for s in result["steps"] if s["type"] == "task"]
    assert sorted(tasks) == sorted(STEP_PATHS), f"{where} {tasks}"

    # The history: exactly one StepCompleted per step, no failure, one timer, one finish.
    assert history.returncode == 0, f"{where} legato history: {history.stderr}"
    events = json.loads(history.stdout)
    types = Counter(e["type"] for e in events)
    completed = Counter(e["payload"]["path"] for e in events if e["type"] == "StepCompleted")
    assert completed == Counter(STEP_PATHS), f"{where} StepCompleted per step: {completed}"
    assert types["StepFailed"] == 0, f"{where} {types}"
    assert types["StepScheduled"] == len(STEP_PATHS), f"{where} {types}"
    assert (types["TimerStarted"], types["TimerFired"], types["RunFinished"]) == (1, 1, 1), (
        f"{where} {types}"
    )
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1)), where
    scheduled = {
        e["payload"]["path"]: e["payload"]["idempotency_key"]
        for e in events
        if e["type"] == "StepScheduled"
    }

    # The chain.
    assert verified.returncode == 0, f"{where} legato verify: {verified.stdout}{verified.stderr}"

    # The stand-in: each step's effect applied exactly once, under one stable key.
    assert all(c.status in (200, 201) for c in calls), f"{where} refused calls"
    keys_by_step: dict[str | None, set[str | None]] = {}
    for c in calls:
        keys_by_step.setdefault(c.step, set()).add(c.idempotency_key)
    assert set(keys_by_step) == set(STEP_PATHS), f"{where} {sorted(map(str, keys_by_step))}"
    for path, keys in keys_by_step.items():
        assert keys == {f"{run_id}:{path}:0"} == {scheduled[str(path)]}, (
            f"{where} step {path} used keys {keys}"
        )
    assert len(effects) == len(STEP_PATHS) == 20, f"{where} {len(effects)} effects"
    assert {e.step for e in effects.values()} == set(STEP_PATHS), where
    assert all(e.applied == 1 for e in effects.values()), where
    attempts = recorder.attempts()
    assert sum(attempts.values()) == len(calls), where
    assert all(effects[k].attempts == n for k, n in attempts.items()), where
    for path in STEP_PATHS:
        effect = effects[f"{run_id}:{path}:0"]
        output = views[path]["output"]
        assert output["json"] == effect.response, (
            f"{where} {path} recorded {output['json']}, the stand-in applied {effect.response}"
        )

    # The crashes did hit work in flight: every step cut off mid-call ran again, and its
    # repeat was answered from the stand-in's record (a replay), not applied anew.
    repeated = {k: n for k, n in attempts.items() if n > 1}
    assert repeated, f"{where} no step was executed twice: the kills hit nothing in flight"
    for kill in kills:
        for c in kill.in_flight:
            assert attempts[c.idempotency_key] > 1, (
                f"{where} kill {kill.number} cut off {c.step}, which never ran again"
            )
    replays = [c for c in calls if c.replayed]
    assert len(replays) == sum(n - 1 for n in attempts.values()), where

    # Recovery does not wait for the dead worker's leases to expire: a starting worker
    # releases the leases of a dead process on its host at once.  Each step cut off by a
    # kill ran again before the lease its dead worker held on it would have expired.
    assert recovery.after_ready, f"{where} no interrupted step was seen running again"
    for kill in kills:
        for cut in kill.in_flight:
            expiry = kill.leases.get(str(cut.step))
            assert expiry is not None, f"{where} {cut.step} was running, but not leased"
            again = min(
                c.wall
                for c in calls
                if c.idempotency_key == cut.idempotency_key and c.received_at > kill.killed_at
            )
            assert again < expiry, (
                f"{where} {cut.step}, cut off by kill {kill.number}, ran again only when "
                "the dead worker's lease expired: its lease was not released at start"
            )


@dataclass
class Recovery:
    """After each kill that cut a call off: how long until that step was called again,
    counted from the kill and from the moment the next worker said it was ready."""

    after_kill: list[float] = field(default_factory=list)
    after_ready: list[float] = field(default_factory=list)
    lease_left: list[float] = field(default_factory=list)  # how early, before its expiry


def _recovery(kills: list[Kill], cluster: Cluster, calls: list[Call]) -> Recovery:
    out = Recovery()
    for kill in kills:
        for cut in kill.in_flight:
            again = [
                c.received_at
                for c in calls
                if c.idempotency_key == cut.idempotency_key and c.received_at > kill.killed_at
            ]
            if not again:
                continue
            out.after_kill.append(min(again) - kill.killed_at)
            expiry = kill.leases.get(str(cut.step))
            wall = min(
                c.wall
                for c in calls
                if c.idempotency_key == cut.idempotency_key and c.received_at > kill.killed_at
            )
            if expiry is not None:
                out.lease_left.append(expiry - wall)
            ready = [
                life.ready_at
                for life in cluster.lives
                if life.ready_at is not None and kill.killed_at < life.ready_at <= min(again)
            ]
            if ready:
                out.after_ready.append(min(again) - max(ready))
    return out


def _report(
    seed: int,
    kills: list[Kill],
    cluster: Cluster,
    calls: list[Call],
    recovery: Recovery,
    took: float,
) -> str:
    attempts = Counter(c.idempotency_key for c in calls)
    phases = Counter(k.phase for k in kills)
    ready = [life.ready_at - life.spawned_at for life in cluster.lives if life.ready_at is not None]

    def ms(values: list[float]) -> str:
        if not values:
            return "-"
        return (
            f"median {statistics.median(values) * 1000:.0f} ms, "
            f"max {max(values) * 1000:.0f} ms (n={len(values)})"
        )

    lines = [
        f"crash test seed={seed}: {len(kills)} kills in {took:.1f} s "
        f"({', '.join(f'{n} {p}' for p, n in sorted(phases.items()))}); "
        f"kill positions (events in the log): {sorted({k.last_seq for k in kills})}",
        f"  calls {len(calls)}, effects {len(attempts)}, steps re-executed "
        f"{sum(1 for n in attempts.values() if n > 1)} "
        f"(extra calls {sum(n - 1 for n in attempts.values())})",
        f"  worker ready after spawn: {ms(ready)}",
        f"  kill -> interrupted step called again: {ms(recovery.after_kill)}",
        f"  new worker ready -> interrupted step called again: {ms(recovery.after_ready)}",
        f"  time left on the dead worker's lease then: {ms(recovery.lease_left)}",
    ]
    for k in kills:
        hit = k.in_flight or k.uncommitted
        lines.append(
            f"  kill {k.number:2d}: aimed at {k.plan}, {k.phase}"
            + (f" ({', '.join(str(c.step) for c in hit)})" if hit else "")
            + f", run at event {k.last_seq}"
        )
    return "\n".join(lines)


# -- a step that outlives its lease ------------------------------------------------------------


def test_a_step_longer_than_its_lease_runs_once(tmp_path: Path) -> None:
    """The worker's heartbeat extends the leases of its running steps before they expire,
    however short the lease (here 0.5 s, shorter than the 2 s default heartbeat): the
    step is not re-claimed under the worker, its outcome is not dropped as "lease lost",
    and it runs once.  (Before the heartbeat followed the lease, this run never ended:
    the step ran again every lease.)"""
    with Recorder(latency=(1.2, 1.2)) as recorder:
        definition = tmp_path / "slow.yaml"
        slow = _task(recorder.url, "s01", None)
        definition.write_text(
            yaml.safe_dump({"name": "slow", "start_at": "s01", "states": {"s01": slow}})
        )
        cluster = Cluster(tmp_path, tmp_path / "slow.db", _worker_env(0.5))
        done = cluster.cli("run", str(definition), "--json", "--timeout", "20", timeout=30)
        calls = recorder.calls
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["status"] == "completed"
    assert len(calls) == 1, [(c.step, c.idempotency_key, c.replayed) for c in calls]
