"""The quick start's first command: seed 002's customer onboarding, end to end.

It starts the stand-in billing service on a free loopback port, then runs
``examples/billing/onboarding.yaml`` with ``legato run`` on one SQLite file, exactly as
you would from a shell::

    legato run examples/billing/onboarding.yaml \\
        --activities examples.billing.activities \\
        --input '{"customer_id": "cust_123", "email": "ann@example.com"}' --db legato.db

and finally shows what the billing service received (one call per step, each with the
step's idempotency key).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from rich.console import Console
from rich.table import Table

from examples.billing.service import BillingService
from legato.cli import app

HERE = Path(__file__).parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="legato.db", help="SQLite file (default: legato.db)")
    parser.add_argument("--customer", default="cust_123")
    parser.add_argument("--email", default="ann@example.com")
    args = parser.parse_args(argv)

    console = Console()
    with BillingService() as billing:
        os.environ["BILLING_URL"] = billing.url
        console.print(f"stand-in billing service at {billing.url}")
        payload = json.dumps({"customer_id": args.customer, "email": args.email})
        try:
            app(
                [
                    "run",
                    str(HERE / "onboarding.yaml"),
                    "--activities",
                    "examples.billing.activities",
                    "--input",
                    payload,
                    "--db",
                    args.db,
                ],
                standalone_mode=False,
            )
            code = 0
        except SystemExit as exc:  # pragma: no cover - typer exits with the run's code
            code = int(exc.code or 0)
        table = Table(title="what the billing service received")
        for column in ("method", "path", "idempotency key", "attempt", "status"):
            table.add_column(column)
        for call in billing.calls():
            table.add_row(
                call["method"],
                call["path"],
                str(call.get("idempotency_key")),
                str(call.get("attempt")),
                str(call.get("status")),
            )
        console.print(table)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
