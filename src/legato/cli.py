"""``legato``: run, inspect and operate workflows from the command line.

Every command is a thin layer over :class:`legato.Engine`; ``asyncio.run`` bridges.
Exit codes: 0 success, 1 the run failed or was cancelled (or an operational error),
2 the definition, the input or the command line is invalid.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from legato.errors import (
    ConfigurationError,
    DefinitionError,
    InputError,
    LegatoError,
    NotFoundError,
)
from legato.runtime import heap
from legato.settings import Settings

app = typer.Typer(
    name="legato",
    help="Legato: durable workflows from YAML/JSON definitions.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)

STATUS_STYLE = {
    "completed": "green",
    "running": "cyan",
    "scheduled": "cyan",
    "ready": "cyan",
    "waiting": "yellow",
    "retrying": "yellow",
    "pending": "dim",
    "skipped": "dim",
    "failed": "red",
    "cancelled": "magenta",
    "compensated": "magenta",
    "compensating": "magenta",
    "compensation_failed": "red",
    "paused": "yellow",
}

DbOption = typer.Option(
    None, "--db", help="Database path or URL (default: $LEGATO_DB or legato.db)."
)
ActivitiesOption = typer.Option(
    None,
    "--activities",
    "-a",
    help="Import path of a module (or module:function) with @legato.activity functions.",
)
JsonOption = typer.Option(False, "--json", help="Print one JSON object only.")


class _Exit(Exception):
    def __init__(self, code: int) -> None:
        self.code = code


def _settings(db: str | None, activities: list[str] | None = None) -> Settings:
    extra = tuple(activities or ())
    try:
        base = Settings.from_env(db=db)
        level = logging.getLevelName(base.log_level.upper())
        if not isinstance(level, int):
            raise ConfigurationError(
                f"invalid settings: LEGATO_LOG_LEVEL: unknown level {base.log_level!r}. "
                "Fix: use DEBUG, INFO, WARNING, ERROR or CRITICAL"
            )
    except LegatoError as exc:
        raise typer.Exit(_fail(exc)) from None
    if extra:
        base = base.model_copy(update={"activities": base.activities + extra})
    logging.basicConfig(level=level, stream=sys.stderr)
    return base


def _fail(exc: LegatoError) -> int:
    code = 2 if isinstance(exc, DefinitionError | InputError | ConfigurationError) else 1
    err.print(f"[red]error:[/red] {escape(exc.message)}", highlight=False, soft_wrap=True)
    return code


def _run(coro: Any) -> Any:
    try:
        return asyncio.run(coro)
    except _Exit as exc:
        raise typer.Exit(exc.code) from None
    except LegatoError as exc:
        raise typer.Exit(_fail(exc)) from None


def _parse_json_arg(value: str | None, what: str) -> Any:
    if value is None:
        return None
    text = value
    if value.startswith("@"):
        path = Path(value[1:])
        if not path.is_file():
            raise InputError(
                f"{what}: file {str(path)!r} does not exist. Fix: check the path (relative "
                f'to {str(Path.cwd())!r}), or pass the JSON itself: {what} \'{{"name": "Ada"}}\''
            )
        text = path.read_text(encoding="utf-8")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        where = f"{what} file {value[1:]!r}" if value.startswith("@") else what
        raise InputError(
            f"{where} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}). "
            f'Fix: correct it there; pass a JSON value such as \'{{"name": "Ada"}}\' '
            "or @file.json"
        ) from exc


def _engine(settings: Settings, *, worker: bool, services: Path | None = None) -> Any:
    services = services or (Path(settings.services) if settings.services else None)
    from legato.activity import ActivityRegistry
    from legato.runtime.local import Engine
    from legato.runtime.worker import WorkerOptions

    registry = ActivityRegistry.from_settings(settings)
    return Engine.open(
        settings.db,
        registry=registry,
        activities=ActivityRegistry.import_paths(settings.activities),
        worker=worker,
        options=WorkerOptions(
            concurrency=settings.worker_concurrency,
            lease_seconds=settings.lease_seconds,
            poll_interval=settings.poll_interval,
            default_step_timeout=settings.step_timeout,
        ),
        sqlite_synchronous=settings.sqlite_synchronous,
        services=services,
    )


# ---- run -------------------------------------------------------------------------------------


@app.command()
def run(
    file: Path = typer.Argument(..., help="A workflow definition (YAML or JSON, any format)."),
    input: str | None = typer.Option(None, "--input", "-i", help="JSON input, or @file.json."),
    db: str | None = DbOption,
    activities: list[str] | None = ActivitiesOption,
    services: Path | None = typer.Option(None, "--services", help="services.yaml registry."),
    as_json: bool = JsonOption,
    detach: bool = typer.Option(False, "--detach", help="Start the run, print its id, return."),
    timeout: float | None = typer.Option(None, "--timeout", help="Give up waiting after N s."),
) -> None:
    """Run a workflow to completion, showing each step's progress."""
    settings = _settings(db, activities)

    async def main() -> int:
        from legato.runtime.local import RunResult

        data = _parse_json_arg(input, "--input")
        definition, source = _load_checked(file, settings, services)
        async with _engine(settings, worker=not detach, services=services) as engine:
            await engine.deploy(definition, source=source)
            run_id = await engine.start(definition, data)
            if detach:
                if as_json:
                    out.print_json(json.dumps({"run_id": run_id, "status": "running"}))
                else:
                    out.print(run_id)
                return 0
            result: RunResult
            try:
                if as_json:
                    result = await engine.wait(run_id, timeout=timeout)
                else:
                    result = await _follow(engine, run_id, timeout)
            except TimeoutError:
                result = await engine.get(run_id)
                err.print(
                    f"[red]error:[/red] run {run_id} did not end within {timeout:g} s "
                    f"(it is {result.status}). Fix: a `legato worker` on this database "
                    f"carries it on; see it with `legato show {run_id}`",
                    highlight=False,
                    soft_wrap=True,
                )
        if as_json:
            print(json.dumps(result.to_json(), default=str))
        else:
            _print_result(result)
        return 0 if result.succeeded else 1

    code = _run(main())
    raise typer.Exit(code)


def _load_checked(file: Path, settings: Settings, services: Path | None) -> Any:
    from legato.activity import ActivityRegistry
    from legato.dsl.loader import load_file

    if not file.is_file():
        raise InputError(_missing_definition(file))
    service_caps = None
    if services is not None:
        from legato.connectors.registry import load_service_capabilities

        service_caps = load_service_capabilities(services)
    result = load_file(
        file, actions=ActivityRegistry.known_names(settings.activities), services=service_caps
    )
    definition = result.raise_for_errors()
    return definition, file.read_text(encoding="utf-8")


def _missing_definition(file: Path) -> str:
    return (
        f"definition file {str(file)!r} does not exist. Fix: check the path (relative to "
        f"{str(Path.cwd())!r}); a definition is a .yaml, .yml or .json file"
    )


async def _follow(engine: Any, run_id: str, timeout: float | None) -> Any:
    result = None
    with Live(console=err, refresh_per_second=10, transient=False) as live:

        async def watch() -> Any:
            last = None
            async for current in engine.watch(run_id, interval=0.2):
                live.update(_steps_table(current))
                last = current
            return last

        try:
            result = await asyncio.wait_for(watch(), timeout)
        finally:
            live.stop()
            if not err.is_terminal:
                err.line()  # Live ends its last line on a terminal only
    return result


def _steps_table(result: Any) -> Table:
    table = Table(
        title=f"{escape(result.workflow)} · run {escape(result.run_id)} · "
        f"{_status(_shown_status(result))}"
    )
    table.add_column("step")
    table.add_column("status")
    table.add_column("attempts", justify="right")
    table.add_column("took", justify="right")
    for step in result.steps:
        table.add_row(
            escape(step["id"]),
            _status(step["status"]),
            str(step.get("attempts") or ""),
            _took(step),
        )
    return table


def _shown_status(result: Any) -> str:
    """A paused run shows as paused (its engine status stays running)."""
    return "paused" if result.paused else str(result.status)


def _status(status: str) -> str:
    style = STATUS_STYLE.get(status, "white")
    return f"[{style}]{status}[/{style}]"


def _took(step: dict[str, Any]) -> str:
    from datetime import datetime

    start = step.get("started_at") or step.get("scheduled_at") or step.get("entered_at")
    end = step.get("finished_at")
    if not start or not end:
        return ""
    seconds = (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


def _print_result(result: Any) -> None:
    out.print(f"run {result.run_id}: {_status(_shown_status(result))}")
    if result.error:
        out.print(
            f"[red]error:[/red] {escape(str(result.error.get('message')))}",
            highlight=False,
            soft_wrap=True,
        )
    out.print_json(json.dumps(result.output, default=str))


# ---- lint / schema ---------------------------------------------------------------------------


@app.command()
def lint(
    files: list[Path] = typer.Argument(..., help="Definitions to check."),
    services: Path | None = typer.Option(None, "--services", help="services.yaml registry."),
    activities: list[str] | None = ActivitiesOption,
    as_json: bool = JsonOption,
) -> None:
    """Validate definitions in every accepted format; exit 2 on errors."""
    settings = _settings(None, activities)

    def main() -> int:
        from legato.activity import ActivityRegistry
        from legato.dsl.loader import load_file

        names = ActivityRegistry.known_names(settings.activities)
        service_caps = None
        if services is not None:
            from legato.connectors.registry import load_service_capabilities

            service_caps = load_service_capabilities(services)
        report: list[dict[str, Any]] = []
        errors = 0
        for file in files:
            if not file.is_file():
                raise InputError(_missing_definition(file))
            result = load_file(file, actions=names, services=service_caps)
            findings = list(result.findings)
            errors += sum(1 for f in findings if f.severity == "error")
            report.append(
                {
                    "file": str(file),
                    "format": result.format,
                    "findings": [
                        {
                            "code": f.code,
                            "severity": f.severity,
                            "pointer": f.pointer,
                            "message": f.message,
                            "fix": f.fix,
                        }
                        for f in findings
                    ],
                }
            )
        if as_json:
            print(json.dumps({"files": report, "errors": errors}))
        else:
            for entry in report:
                if not entry["findings"]:
                    out.print(
                        f"{escape(entry['file'])}: [green]ok[/green] ({entry['format']} format)",
                        soft_wrap=True,
                    )
                for f in entry["findings"]:
                    color = "red" if f["severity"] == "error" else "yellow"
                    out.print(
                        f"{escape(entry['file'])}:{escape(f['pointer'] or '/')}: "
                        f"[{color}]{f['severity']}[/{color}] {f['code']} {escape(f['message'])} "
                        f"[dim]Fix: {escape(f['fix'] or '')}[/dim]",
                        highlight=False,
                        soft_wrap=True,
                    )
        return 2 if errors else 0

    try:
        code = main()
    except LegatoError as exc:
        raise typer.Exit(_fail(exc)) from None
    raise typer.Exit(code)


@app.command()
def schema() -> None:
    """Print the JSON Schema of the canonical definition format."""
    from legato.dsl.model import definition_json_schema

    print(json.dumps(definition_json_schema(), indent=2))


# ---- runs, show, history, verify --------------------------------------------------------------


@app.command()
def runs(
    db: str | None = DbOption,
    status: str | None = typer.Option(None, "--status"),
    workflow: str | None = typer.Option(None, "--workflow"),
    limit: int = typer.Option(50, "--limit"),
    as_json: bool = JsonOption,
) -> None:
    """List runs, newest first."""
    settings = _settings(db)

    async def main() -> None:
        async with _engine(settings, worker=False) as engine:
            records = await engine.runs(status=status, workflow=workflow, limit=limit)
        rows = [
            {
                "run_id": r.id,
                "workflow": r.workflow,
                "version": r.workflow_version,
                "status": r.status,
                "created_at": r.created_at.isoformat() if r.created_at else None,
                "finished_at": r.finished_at.isoformat() if r.finished_at else None,
            }
            for r in records
        ]
        if as_json:
            print(json.dumps(rows))
            return
        table = Table()
        for col in ("run", "workflow", "version", "status", "created", "finished"):
            table.add_column(col)
        for r in rows:
            table.add_row(
                escape(r["run_id"]),
                escape(r["workflow"]),
                escape(r["version"]),
                _status(r["status"]),
                r["created_at"] or "",
                r["finished_at"] or "",
            )
        out.print(table)

    _run(main())


@app.command()
def show(run_id: str, db: str | None = DbOption, as_json: bool = JsonOption) -> None:
    """Show a run: per-step status, attempts, timings, outputs and error."""
    settings = _settings(db)

    async def main() -> None:
        async with _engine(settings, worker=False) as engine:
            result = await engine.get(run_id)
        if as_json:
            print(json.dumps(result.to_json(), default=str))
            return
        out.print(_steps_table(result))
        for step in result.steps:
            if step.get("error"):
                out.print(
                    f"[red]{escape(step['id'])}[/red]: {escape(str(step['error'].get('message')))}",
                    highlight=False,
                    soft_wrap=True,
                )
        _print_result(result)

    _run(main())


@app.command()
def history(run_id: str, db: str | None = DbOption, as_json: bool = JsonOption) -> None:
    """Print a run's event log."""
    settings = _settings(db)

    async def main() -> None:
        async with _engine(settings, worker=False) as engine:
            events = await engine.history(run_id)
        rows = [
            {
                "seq": e.seq,
                "type": e.type,
                "at": e.at.isoformat() if hasattr(e.at, "isoformat") else e.at,
                "payload": e.payload,
                "hash": e.hash,
            }
            for e in events
        ]
        if as_json:
            print(json.dumps(rows, default=str))
            return
        for r in rows:
            out.print(
                f"{r['seq']:>4}  {r['at']}  [bold]{escape(r['type'])}[/bold]  "
                f"{escape(json.dumps(r['payload'], default=str)[:200])}",
                highlight=False,
                soft_wrap=True,
            )

    _run(main())


@app.command()
def verify(
    run_id: str | None = typer.Argument(None), db: str | None = DbOption, as_json: bool = JsonOption
) -> None:
    """Check the hash chain of one run (or all) and report the first broken link."""
    settings = _settings(db)

    async def main() -> int:
        async with _engine(settings, worker=False) as engine:
            report = await engine.verify(run_id)
        broken = {k: v for k, v in report.items() if v is not None}
        if as_json:
            print(json.dumps({"checked": len(report), "broken": broken}))
        else:
            for rid, seq in broken.items():
                out.print(f"[red]run {rid}: the chain breaks at event {seq}[/red]")
            if not broken:
                out.print(f"[green]{len(report)} run(s) checked; every chain is intact[/green]")
        return 1 if broken else 0

    raise typer.Exit(_run(main()))


# ---- signal, cancel, pause, resume, worker ---------------------------------------------------


@app.command()
def signal(
    run_id: str,
    name: str,
    data: str | None = typer.Option(None, "--data", help="JSON payload, or @file.json."),
    correlation: str | None = typer.Option(None, "--correlation"),
    db: str | None = DbOption,
    as_json: bool = JsonOption,
) -> None:
    """Deliver a signal (an event) to a run; a waiting run wakes up."""
    settings = _settings(db)

    async def main() -> None:
        payload = _parse_json_arg(data, "--data")
        async with _engine(settings, worker=False) as engine:
            result = await engine.signal(run_id, name, payload, correlation=correlation)
        if as_json:
            print(json.dumps({"run_id": run_id, "signal": name, "status": result.status}))
        else:
            out.print(
                f"signal {escape(repr(name))} delivered to run {escape(run_id)} "
                f"({_status(result.status)})",
                soft_wrap=True,
            )

    _run(main())


@app.command()
def callback(
    token: str = typer.Argument(..., help="The callback token the service was given."),
    data: str | None = typer.Option(None, "--data", help="The result: JSON, or @file.json."),
    error: str | None = typer.Option(None, "--error", help="Report a failure with this message."),
    error_class: str = typer.Option(
        "PERMANENT", "--error-class", help="RETRYABLE, PERMANENT, TIMEOUT, ... (with --error)."
    ),
    db: str | None = DbOption,
    as_json: bool = JsonOption,
) -> None:
    """Deliver the result of an async service operation to the step waiting for it."""
    settings = _settings(db)

    async def main() -> None:
        from legato.errors import ErrorClass

        payload = _parse_json_arg(data, "--data")
        failure = None
        if error is not None:
            try:
                cls = ErrorClass(error_class.upper())
            except ValueError:
                raise InputError(
                    f"--error-class {error_class!r} is not one of "
                    f"{', '.join(c.value for c in ErrorClass)}"
                ) from None
            failure = {"message": error, "error_class": cls.value}
        async with _engine(settings, worker=False) as engine:
            result = await engine.callback(token, payload, error=failure)
        if as_json:
            print(json.dumps({"run_id": result.run_id, "status": result.status}))
        else:
            out.print(f"callback delivered to run {result.run_id} ({_status(result.status)})")

    _run(main())


@app.command()
def cancel(run_id: str, db: str | None = DbOption) -> None:
    """Cancel a run; the compensations of its completed steps run in reverse order."""
    settings = _settings(db)

    async def main() -> None:
        async with _engine(settings, worker=False) as engine:
            result = await engine.cancel(run_id)
        out.print(f"run {run_id}: {_status(result.status)}")

    _run(main())


@app.command()
def pause(
    run_id: str,
    reason: str = typer.Option("paused from the command line", "--reason"),
    db: str | None = DbOption,
    as_json: bool = JsonOption,
) -> None:
    """Pause a run: no new step starts until `legato resume` (running steps finish)."""
    settings = _settings(db)

    async def main() -> None:
        async with _engine(settings, worker=False) as engine:
            result = await engine.pause(run_id, reason=reason)
        _print_change(result, as_json)

    _run(main())


@app.command()
def resume(run_id: str, db: str | None = DbOption, as_json: bool = JsonOption) -> None:
    """Resume a paused run: the steps it held back start (a worker runs them)."""
    settings = _settings(db)

    async def main() -> None:
        async with _engine(settings, worker=False) as engine:
            result = await engine.resume(run_id, reason="resumed from the command line")
        _print_change(result, as_json)

    _run(main())


def _print_change(result: Any, as_json: bool) -> None:
    if as_json:
        print(
            json.dumps({"run_id": result.run_id, "status": result.status, "paused": result.paused})
        )
    else:
        out.print(f"run {result.run_id}: {_status(_shown_status(result))}")


@app.command()
def worker(
    db: str | None = DbOption,
    activities: list[str] | None = ActivitiesOption,
    concurrency: int | None = typer.Option(None, "--concurrency"),
    services: Path | None = typer.Option(None, "--services", help="services.yaml registry."),
    until_idle: bool = typer.Option(
        False, "--until-idle", help="Exit once no run is unfinished (for scripts and tests)."
    ),
) -> None:
    """Resume every unfinished run and keep running due work (Ctrl-C stops)."""
    settings = _settings(db, activities)
    if concurrency is not None:
        settings = settings.model_copy(update={"worker_concurrency": concurrency})

    async def main() -> None:
        import signal as signals

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for number in (signals.SIGTERM, signals.SIGINT):
            # stop cleanly: in-flight outcomes are committed and leases released at once
            loop.add_signal_handler(number, stop.set)
        async with _engine(settings, worker=True, services=services) as engine:
            err.print(f"legato worker {engine.worker.owner} on {settings.db}")
            heap.settle()  # what is alive now lives as long as the worker
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.5)
                if until_idle:
                    active = await engine.store.runs_with_status(
                        ("running", "compensating"), limit=1
                    )
                    if not active:
                        return

    try:
        _run(main())
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


@app.command()
def serve(
    db: str | None = DbOption,
    activities: list[str] | None = ActivitiesOption,
    services: Path | None = typer.Option(None, "--services", help="services.yaml registry."),
    host: str | None = typer.Option(None, "--host", help="Address ($LEGATO_API_HOST)."),
    port: int | None = typer.Option(None, "--port", help="Port ($LEGATO_API_PORT)."),
    dev: bool = typer.Option(
        False, "--dev", help="Dev mode: a generated secret if none is set, and a printed token."
    ),
    worker: bool | None = typer.Option(
        None, "--worker/--no-worker", help="Run a worker in this process (default: yes)."
    ),
    concurrency: int | None = typer.Option(None, "--concurrency"),
) -> None:
    """Serve the REST API (OpenAPI at /docs), with an embedded worker by default."""
    base = _settings(db, activities)
    updates: dict[str, Any] = {
        "api_host": host,
        "api_port": port,
        "api_dev": True if dev else None,
        "api_worker": worker,
        "worker_concurrency": concurrency,
        "services": str(services) if services is not None else None,
    }
    try:
        settings = Settings.from_env(
            {}, **{**base.model_dump(), **{k: v for k, v in updates.items() if v is not None}}
        )
        import uvicorn

        from legato.api import create_app

        api = create_app(settings)
    except ImportError as exc:
        err.print(
            f"[red]error:[/red] the API needs the server extra ({escape(str(exc))}). "
            "Fix: pip install 'legato[server]'",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(2) from None
    except LegatoError as exc:
        raise typer.Exit(_fail(exc)) from None
    where = f"http://{settings.api_host}:{settings.api_port}"
    mode = "embedded worker" if settings.api_worker else "no worker here: run `legato worker`"
    print(
        f"legato serve on {where} (database {settings.db}; {mode}); docs at {where}/docs",
        file=sys.stderr,
        flush=True,
    )
    if api.state.dev_token:
        print(
            "dev mode: a token for tenant 'default', environment 'default', every scope:\n"
            f"dev token: {api.state.dev_token}\n"
            f"  curl -H 'Authorization: Bearer {api.state.dev_token}' "
            f"{where}/api/v1/workflows/definitions",
            file=sys.stderr,
            flush=True,
        )
    elif settings.api_dev:
        print(
            "dev mode: tokens are checked with the configured public key; none was minted",
            file=sys.stderr,
            flush=True,
        )
    server = uvicorn.Server(
        uvicorn.Config(
            api,
            host=settings.api_host,
            port=settings.api_port,
            log_level=settings.log_level.lower(),
            lifespan="on",
        )
    )
    heap.settle()  # what is alive now (the app, every import) lives as long as the server
    try:
        server.run()
    except KeyboardInterrupt:
        raise typer.Exit(0) from None
    if not server.started:
        raise typer.Exit(1)


def main() -> None:
    try:
        app()
    except NotFoundError as exc:  # pragma: no cover - typer handles most paths
        raise SystemExit(_fail(exc)) from None


if __name__ == "__main__":  # pragma: no cover
    main()
