"""Legato as a library: register an activity, run a workflow, read the result.

    python examples/embed.py
"""

import asyncio
import tempfile
from pathlib import Path

import legato

WORKFLOW = """
name: greet_and_score
start_at: greet
states:
  greet:
    type: task
    action: greet
    input: {name: "{{ input.name }}"}
    output: {$.greeting: $.result.greeting}
    next: score
  score:
    type: task
    action: score
    input: {text: $.greeting}
    result_path: $.score
"""


@legato.activity("greet")
async def greet(name: str) -> dict:
    return {"greeting": f"Hello, {name}!"}


async def main() -> legato.RunResult:
    with tempfile.TemporaryDirectory() as tmp:
        definition = Path(tmp, "greet.yaml")
        definition.write_text(WORKFLOW)
        async with legato.Engine.open(f"{tmp}/legato.db", activities=[greet]) as engine:

            @engine.activity("score")
            def score(text: str) -> int:  # sync functions run in a thread
                return len(text)

            result = await engine.run(definition, {"name": "Ada"}, timeout=30)
            print(result.status, result.output["greeting"], result.output["score"])
            return result


if __name__ == "__main__":
    asyncio.run(main())
