"""``python -m legato.mock CONFIG.yaml --port N [--grpc-port M]``: serve a mock service.

HTTP on ``--port`` (unless ``--transport grpc``), the ExternalTaskExecutor gRPC contract on
``--grpc-port`` (or on ``--port`` with ``--transport grpc``). Runs until interrupted
(Ctrl-C or SIGTERM).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Sequence

from legato.errors import LegatoError
from legato.mock._core import MockService


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m legato.mock", description="Serve a mock service from a YAML file."
    )
    parser.add_argument("config", help="the mock service's YAML (or JSON) file")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8080, help="HTTP port (0: any free port)")
    parser.add_argument("--grpc-port", type=int, default=None, help="also serve gRPC here")
    parser.add_argument(
        "--transport",
        choices=("http", "grpc", "both"),
        default=None,
        help="http (default), grpc (on --port), or both (gRPC on --grpc-port)",
    )
    return parser


async def _serve(svc: MockService, host: str, http_port: int | None, grpc_port: int | None) -> None:
    from legato.mock._http import HttpMock

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    http = HttpMock(svc, host=host, port=http_port) if http_port is not None else None
    async with contextlib.AsyncExitStack() as stack:
        if http is not None:
            url = http.start()
            stack.callback(http.stop)
            print(f"mock service {svc.name}: HTTP on {url}", flush=True)
        if grpc_port is not None:
            address = await stack.enter_async_context(svc.grpc(port=grpc_port, host=host))
            print(f"mock service {svc.name}: gRPC on {address}", flush=True)
        for op in svc.operations.values():
            print(f"  {op.name}: {op.method} {op.path}", flush=True)
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        svc = MockService.from_file(args.config)
    except LegatoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    transport = args.transport or ("both" if args.grpc_port is not None else "http")
    http_port = args.port if transport in ("http", "both") else None
    if transport == "grpc":
        grpc_port = args.port if args.grpc_port is None else args.grpc_port
    elif transport == "both":
        grpc_port = args.grpc_port if args.grpc_port is not None else 0
    else:
        grpc_port = None
    asyncio.run(_serve(svc, args.host, http_port, grpc_port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
