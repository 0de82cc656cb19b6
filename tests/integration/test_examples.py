"""Docs that run: the examples in examples/ and the README's code are executed here."""

from __future__ import annotations

import asyncio
import re
import runpy
from pathlib import Path

import pytest

import legato

ROOT = Path(__file__).resolve().parents[2]


async def test_examples_embed_runs() -> None:
    module = runpy.run_path(str(ROOT / "examples" / "embed.py"))
    result = await module["main"]()
    assert result.status == "completed"
    assert result.output["greeting"] == "Hello, Ada!"
    assert result.output["score"] == len("Hello, Ada!")


async def test_hello_example_takes_the_vip_branch(tmp_path: Path) -> None:
    async with legato.Engine.open(tmp_path / "l.db") as engine:
        vip = await engine.run(ROOT / "examples" / "hello.yaml", {"name": "Ada", "vip": True})
        plain = await engine.run(ROOT / "examples" / "hello.yaml", {"name": "Bob"})
    assert vip.status == plain.status == "completed"
    assert vip.output["perk"] == "lounge access"
    assert "perk" not in plain.output
    assert {s["id"]: s["status"] for s in plain.steps}["vip_welcome"] == "skipped"


async def test_order_saga_example_compensates_in_reverse_order(tmp_path: Path) -> None:
    async with legato.Engine.open(tmp_path / "l.db") as engine:
        result = await engine.run(
            ROOT / "examples" / "order_saga.yaml", {"order_id": "o-1", "amount": 42}
        )
        history = await engine.history(result.run_id)
    assert result.status == "failed"
    assert result.error is not None
    assert "carrier" in result.error["message"]
    done = [
        e.payload["path"]
        for e in history
        if e.type == "StepCompleted" and e.payload["path"].endswith("#compensate")
    ]
    assert done == ["charge_card#compensate", "reserve_stock#compensate"]
    logged = [
        e.payload["output"]["message"]
        for e in history
        if e.type == "StepCompleted" and e.payload["path"].endswith("#compensate")
    ]
    assert logged == ["refunded ch-o-1", "released res-o-1"]


def test_readme_embedding_snippet_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    assert blocks, "the README has a Python example"
    (tmp_path / "greet.yaml").write_text(
        "name: greet\nstart_at: greet\nstates:\n  greet:\n    type: task\n"
        "    action: greet\n    input: {name: '{{ input.name }}'}\n"
    )
    monkeypatch.chdir(tmp_path)
    printed: list[str] = []
    namespace = {"print": lambda *a: printed.append(" ".join(map(str, a)))}
    code = blocks[0].replace("asyncio.run(main())", "")
    exec(compile(code, "README.md", "exec"), namespace)
    asyncio.run(namespace["main"]())
    assert printed
    assert printed[0].startswith("completed")
    assert (tmp_path / "legato.db").exists()


def test_readme_settings_table_matches_settings() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"`(LEGATO_[A-Z_]+)`", readme))
    fields = {f"LEGATO_{name.upper()}" for name in legato.Settings.model_fields}
    assert fields <= documented, f"undocumented settings: {sorted(fields - documented)}"
