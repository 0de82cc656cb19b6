"""``legato worker`` processes for multi-process tests: spawn, wait until ready, pause
(SIGSTOP), resume, SIGKILL, and reap every one on exit.

Each worker runs in its own session (process group), writes stdout and stderr to its own
log file, and announces itself with its banner ``legato worker <owner> on <db>``; the
owner is the ``lease_owner`` its leases carry in ``due_work``.  Used like::

    with WorkerProcesses(db_url, env=worker_env(LEGATO_LEASE_SECONDS="2"), logs=tmp) as ws:
        a = ws.spawn()
        a.wait_ready()
        a.pause(); ...; a.resume()
        a.kill()
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

__all__ = ["WorkerProcess", "WorkerProcesses", "legato_command", "worker_env"]

_BANNER = re.compile(rb"legato worker\s+(\S+)\s+on\s")  # the console may wrap it


def legato_command() -> list[str]:
    """The ``legato`` CLI of this interpreter's environment."""
    script = Path(sys.executable).with_name("legato")
    return [str(script)] if script.exists() else [sys.executable, "-m", "legato.cli"]


def worker_env(**legato: str) -> dict[str, str]:
    """This process's environment without any ``LEGATO_*`` variable, plus ``legato``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEGATO_")}
    env.update(legato)
    return env


@dataclass
class WorkerProcess:
    proc: subprocess.Popen[bytes]
    log: Path
    spawned_at: float  # time.monotonic()
    ready_at: float | None = None
    owner: str | None = None  # its lease owner id, from the banner
    paused: bool = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_ready(self, timeout: float = 30.0) -> WorkerProcess:
        """Wait for the banner (the store is open, dead workers' leases recovered)."""
        until = time.monotonic() + timeout
        while time.monotonic() < until:
            found = _BANNER.search(self.log.read_bytes())
            if found:
                self.ready_at = time.monotonic()
                self.owner = found.group(1).decode()
                return self
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"worker {self.pid} exited with {self.proc.returncode} before it was "
                    f"ready:\n{self.output}"
                )
            time.sleep(0.005)
        raise AssertionError(f"worker {self.pid} was not ready in {timeout:g}s:\n{self.output}")

    def wait_log(self, text: str, timeout: float) -> bool:
        """True once ``text`` appears in the worker's log, False after ``timeout`` s."""
        until = time.monotonic() + timeout
        while time.monotonic() < until:
            if text in self.output:
                return True
            time.sleep(0.02)
        return text in self.output

    def _signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def pause(self) -> None:
        """SIGSTOP: the process freezes where it is (its sockets stay open)."""
        self._signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        self._signal(signal.SIGCONT)
        self.paused = False

    def interrupt(self, timeout: float = 30.0) -> int:
        """Ctrl-C (SIGINT): the worker stops cleanly (its leases released); its exit code."""
        self._signal(signal.SIGINT)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        """SIGKILL the worker's process group, then reap it."""
        self._signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None


class WorkerProcesses:
    """``legato worker`` processes on one database; all are killed and reaped on exit."""

    def __init__(self, db: str, *, env: dict[str, str], logs: Path) -> None:
        self.db, self.env, self.logs = db, env, logs
        self.workers: list[WorkerProcess] = []

    def spawn(self, *extra: str) -> WorkerProcess:
        log = self.logs / f"worker-{len(self.workers) + 1:02d}.log"
        with log.open("wb") as sink:
            spawned = time.monotonic()
            proc = subprocess.Popen(
                [*legato_command(), "worker", "--db", self.db, *extra],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, signalled as one
            )
        worker = WorkerProcess(proc, log, spawned)
        self.workers.append(worker)
        return worker

    def cli(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run ``legato <args> --db <db>`` to completion."""
        return subprocess.run(
            [*legato_command(), *args, "--db", self.db],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def close(self) -> None:
        for worker in self.workers:
            if worker.alive:
                worker.kill()  # SIGKILL ends a stopped (paused) process too

    def __enter__(self) -> WorkerProcesses:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
