"""Retrying a failed run from its failed step, and one engine acting for many scopes; on
SQLite and on PostgreSQL (the ``engine`` fixture of conftest.py)."""

from __future__ import annotations

from typing import Any

import pytest

import legato


def workflow(**extra: Any) -> legato.Definition:
    return legato.Definition.model_validate(
        {
            "name": "retryable",
            "start_at": "a",
            "states": {
                "a": {"type": "task", "action": "count_a", "result_path": "$.a", "next": "b"},
                "b": {
                    "type": "task",
                    "action": "maybe_fail",
                    "retry": {"max_attempts": 1},
                    "result_path": "$.b",
                    "next": "c",
                    **extra,
                },
                "c": {"type": "task", "action": "noop"},
            },
        }
    )


async def test_a_failed_run_is_retried_from_its_failed_step(engine: legato.Engine) -> None:
    calls = {"a": 0, "b": 0}
    broken = {"yes": True}

    @engine.activity("count_a")
    def count_a() -> dict[str, int]:
        calls["a"] += 1
        return {"n": calls["a"]}

    @engine.activity("maybe_fail")
    def maybe_fail() -> str:
        calls["b"] += 1
        if broken["yes"]:
            raise legato.StepError("the ledger is closed", error_class="PERMANENT")
        return "ok"

    failed = await engine.run(workflow(), {})
    assert failed.status == "failed"
    broken["yes"] = False
    retried = await engine.retry(failed.run_id)
    assert retried.status == "running"
    done = await engine.wait(failed.run_id, timeout=30)
    history = [e.type for e in await engine.history(failed.run_id)]
    assert await engine.verify(failed.run_id) == {failed.run_id: None}  # the chain holds

    assert done.status == "completed"
    assert done.output["a"] == {"n": 1}  # the completed step kept its output, ran once
    assert done.output["b"] == "ok"
    assert calls == {"a": 1, "b": 2}
    assert history.count("RetryRequested") == 1
    assert history.count("RunFinished") == 2  # failed, then completed
    steps = {s["id"]: s["status"] for s in done.steps}
    assert steps["b@0"] == "failed"  # the first visit stays in the record
    assert steps["b"] == "completed"


async def test_only_a_failed_uncompensated_run_can_be_retried(engine: legato.Engine) -> None:
    ok = await engine.run(
        legato.Definition.model_validate(
            {"name": "ok", "start_at": "a", "states": {"a": {"type": "succeed"}}}
        ),
        {},
    )
    with pytest.raises(legato.ConflictError, match="only a failed run"):
        await engine.retry(ok.run_id)
    compensated = await engine.run(
        legato.Definition.model_validate(
            {
                "name": "saga",
                "start_at": "a",
                "states": {
                    "a": {
                        "type": "task",
                        "action": "noop",
                        "compensation": {"action": "noop"},
                        "next": "b",
                    },
                    "b": {
                        "type": "task",
                        "action": "fail",
                        "input": {"error_class": "PERMANENT", "message": "no"},
                    },
                },
            }
        ),
        {},
    )
    assert compensated.status == "failed"
    with pytest.raises(legato.ConflictError, match="compensated"):
        await engine.retry(compensated.run_id)
    with pytest.raises(legato.NotFoundError):
        await engine.retry("no-such-run")


async def test_an_engine_acts_for_each_scope_separately(engine: legato.Engine) -> None:
    definition = legato.Definition.model_validate(
        {"name": "hello", "start_at": "a", "states": {"a": {"type": "succeed"}}}
    )
    acme = engine.for_scope(legato.Scope("acme", "prod"))
    globex = engine.for_scope(legato.Scope("globex", "prod"))
    acme_dev = engine.for_scope(legato.Scope("acme", "dev"))
    result = await acme.run(definition, {})
    assert result.status == "completed"
    for other in (globex, acme_dev, engine):
        with pytest.raises(legato.NotFoundError):
            await other.get(result.run_id)
        assert [r.id for r in await other.runs()] == []
        with pytest.raises(legato.NotFoundError):
            await other.cancel(result.run_id)
    assert [r.id for r in await acme.runs()] == [result.run_id]
