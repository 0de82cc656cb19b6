"""Structure checks and lint rules for a canonical :class:`Definition`.

Each rule has a stable code (``L1xx``; the readers' codes are ``L0xx``) and reports a
:class:`Finding` located by JSON pointer. The rules are listed in
``docs/reference/lint-rules.md``::

    findings = validate(definition, actions={"send_email"}, services={"hr": {"a.b"}})

``lint()`` loads a file or text and validates it in one go (``legato lint``).
"""

from __future__ import annotations

import datetime
import os
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from legato.dsl import model
from legato.dsl.findings import (
    Finding,
    PointerMap,
    did_you_mean,
    error,
    join,
    one_of,
    relocate,
    warning,
)
from legato.dsl.schedule import schedule_issues

if TYPE_CHECKING:
    from legato.dsl.loader import LoadResult

UNKNOWN_TARGET = "L101"
UNKNOWN_CATCH_TARGET = "L102"
UNREACHABLE = "L103"
UNKNOWN_DEPENDENCY = "L104"
DEPENDENCY_CYCLE = "L105"
TASK_KIND = "L106"
UNKNOWN_ACTION = "L107"
UNKNOWN_SERVICE = "L108"
UNKNOWN_OPERATION = "L109"
UNKNOWN_WORKFLOW = "L110"
BAD_NAME = "L111"
WAIT_KIND = "L112"
PARALLEL_BRANCHES = "L113"
JOIN_TOO_LARGE = "L114"
CHOICE_NO_DEFAULT = "L115"
BAD_EXPRESSION = "L116"
BAD_TARGET_PATH = "L117"
RETRY_INTERVALS = "L118"
BAD_INSTANT = "L119"
TRIGGER_INCOMPLETE = "L120"
BAD_SCHEDULE = "L121"

RULES: dict[str, tuple[str, str]] = {
    UNKNOWN_TARGET: ("error", "a transition names a state that does not exist"),
    UNKNOWN_CATCH_TARGET: ("warning", "a catch (`on_failure`) names a state that does not exist"),
    UNREACHABLE: ("warning", "a state cannot be reached from the start"),
    UNKNOWN_DEPENDENCY: ("error", "`depends_on` names a state that does not exist"),
    DEPENDENCY_CYCLE: ("error", "`depends_on` is circular"),
    TASK_KIND: ("error", "a task (or compensation) needs an action or a service operation"),
    UNKNOWN_ACTION: ("error", "a task names an action nobody registered"),
    UNKNOWN_SERVICE: ("error", "a task names a service that is not in the registry"),
    UNKNOWN_OPERATION: ("error", "a task names an operation its service does not offer"),
    UNKNOWN_WORKFLOW: ("error", "a subflow names a workflow that does not exist"),
    BAD_NAME: ("error", "a state or branch name is not a valid name"),
    WAIT_KIND: ("error", "a wait needs exactly one of duration, until and event"),
    PARALLEL_BRANCHES: ("error", "a parallel state has no branches, or two with one name"),
    JOIN_TOO_LARGE: ("error", "`join.at_least` is more than the number of branches"),
    CHOICE_NO_DEFAULT: ("warning", "a choice has no default"),
    BAD_EXPRESSION: ("error", "an expression, template, path or condition does not parse"),
    BAD_TARGET_PATH: ("error", "an output or result path is not a simple path like `$.a.b`"),
    RETRY_INTERVALS: ("warning", "a retry policy's initial interval exceeds its maximum"),
    BAD_INSTANT: ("error", "a wait's `until` is neither an expression nor an instant with a zone"),
    TRIGGER_INCOMPLETE: ("error", "a trigger lacks what its type needs"),
    BAD_SCHEDULE: ("error", "a scheduled trigger's schedule cannot be read (cron, time zone, ...)"),
}

_NAME = re.compile(model.NAME_PATTERN)
_TARGET_PATH = re.compile(
    r"^\$(?:\.[A-Za-z_][A-Za-z0-9_\-]*|\[\d+\]|\['[^'\\\]]*'\]|\[\"[^\"\\\]]*\"\])+$"
)
_EXPR_FIX = (
    "correct the expression: paths look like `$.a.b`, templates like `{{ input.name }}`, "
    "conditions like `input.amount > 100` or {field, operator, value}"
)


def validate(
    definition: model.Definition,
    *,
    actions: set[str] | None = None,
    services: Mapping[str, set[str]] | None = None,
    workflows: set[str] | None = None,
    pointers: PointerMap | None = None,
) -> list[Finding]:
    """Check ``definition``; return its findings (errors and warnings).

    ``actions``: the action names that exist (built-in and registered); ``services``:
    service name -> its capabilities (operations; an empty set accepts any operation);
    ``workflows``: the workflow names a subflow may run. A check whose registry is
    ``None`` is skipped. ``pointers`` translates canonical pointers to the source
    document (see :func:`legato.dsl.findings.source_pointer`).
    """
    checker = _Checker(actions=actions, services=services, workflows=workflows)
    checker.definition(definition)
    return [relocate(f, pointers) for f in checker.findings]


def lint(
    target: str | os.PathLike[str],
    *,
    format: str | None = None,
    actions: set[str] | None = None,
    services: Mapping[str, set[str]] | None = None,
    workflows: set[str] | None = None,
) -> LoadResult:
    """Load a definition file (a path) or text and validate it.

    A ``str`` is a path when it names an existing file or is one line ending in
    ``.yaml``, ``.yml`` or ``.json``; otherwise it is the definition's text.
    """
    from legato.dsl.loader import load_file, load_text

    checks: dict[str, Any] = {"actions": actions, "services": services, "workflows": workflows}
    if isinstance(target, os.PathLike) or _looks_like_path(target):
        return load_file(target, format=format, **checks)
    return load_text(target, format=format, **checks)


def _looks_like_path(text: str) -> bool:
    if "\n" in text or "{" in text:
        return False
    if text.strip().lower().endswith((".yaml", ".yml", ".json")):
        return True
    try:
        return os.path.isfile(text)
    except (OSError, ValueError):
        return False


class _Checker:
    def __init__(
        self,
        *,
        actions: set[str] | None,
        services: Mapping[str, set[str]] | None,
        workflows: set[str] | None,
    ) -> None:
        self.actions = actions
        self.services = services
        self.workflows = workflows
        self.findings: list[Finding] = []

    def error(self, code: str, pointer: str, message: str, fix: str) -> None:
        self.findings.append(error(code, pointer, message, fix))

    def warning(self, code: str, pointer: str, message: str, fix: str) -> None:
        self.findings.append(warning(code, pointer, message, fix))

    # ---- graphs ----------------------------------------------------------------------------

    def definition(self, d: model.Definition) -> None:
        self.graph(d.states, d.start_at, "", frozenset())
        if d.retry is not None:
            self.retry(d.retry, "/retry")
        if d.trigger is not None:
            for i, cond in enumerate(d.trigger.conditions):
                self.condition(cond, join("/trigger/conditions", i))
            self.trigger(d.trigger)

    def trigger(self, t: model.Trigger) -> None:
        if t.type == "event" and not t.event_name:
            self.error(
                TRIGGER_INCOMPLETE,
                "/trigger/event_name",
                "an event trigger needs the event's name; without one nothing starts it",
                "add `event_name`, e.g. `event_name: customer.created`",
            )
        if t.type == "scheduled" and not t.schedule:
            self.error(
                TRIGGER_INCOMPLETE,
                "/trigger/schedule",
                "a scheduled trigger needs a schedule; without one it never fires",
                'add `schedule`, e.g. `schedule: "*/5 * * * *"`',
            )
        elif t.type == "scheduled":
            for issue in schedule_issues(t.schedule):
                self.error(
                    BAD_SCHEDULE, "/trigger/schedule" + issue.pointer, issue.message, issue.fix
                )
        if t.secret_env is not None and t.type != "webhook":
            self.error(
                TRIGGER_INCOMPLETE,
                "/trigger/secret_env",
                f"`secret_env` only means something on a webhook trigger, not `{t.type}`",
                "remove `secret_env`, or make the trigger `type: webhook`",
            )

    def graph(
        self,
        states: Mapping[str, model.State],
        start_at: str,
        base: str,
        outer: frozenset[str],
    ) -> None:
        names = set(states)
        where = "this branch" if base else "the workflow"
        if start_at not in names:
            self.error(
                UNKNOWN_TARGET,
                join(base, "start_at"),
                f"The start state `{start_at}` is not a state of {where}.",
                self._target_fix(start_at, names),
            )
        for name, state in states.items():
            ptr = join(base, "states", name)
            if not _NAME.match(name):
                self.error(
                    BAD_NAME,
                    ptr,
                    f"`{name}` is not a valid state name.",
                    "use letters, digits, `_` and `-`, starting with a letter or `_` "
                    f"(for example `{_suggest_name(name)}`)",
                )
            self.transitions(state, ptr, names)
            self.state(state, ptr, names | outer)
        self.reachability(states, start_at, base)
        self.dependencies(states, base, names | outer)

    def transitions(self, state: model.State, ptr: str, names: set[str]) -> None:
        def check(target: str | None, pointer: str, what: str) -> None:
            if target is not None and target not in names:
                self.error(
                    UNKNOWN_TARGET,
                    pointer,
                    f"{what} `{target}` is not a state here.",
                    self._target_fix(target, names),
                )

        check(state.next, join(ptr, "next"), "The next state")
        if isinstance(state, model.ChoiceState):
            for i, rule in enumerate(state.choices):
                check(rule.next, join(ptr, "choices", i, "next"), "The choice's next state")
            check(state.default, join(ptr, "default"), "The default state")
        if isinstance(state, model.WaitState) and state.event is not None:
            check(
                state.event.timeout_next,
                join(ptr, "event", "timeout_next"),
                "The state to go to on timeout",
            )
        if isinstance(state, model.TaskState | model.SubflowState):
            for i, catch in enumerate(state.catch):
                if catch.next not in names:
                    close = did_you_mean(catch.next, names)
                    self.warning(
                        UNKNOWN_CATCH_TARGET,
                        join(ptr, "catch", i, "next"),
                        f"On failure the run goes to `{catch.next}`, which is not a state: "
                        "if this step fails the run fails instead.",
                        f"define a state named `{catch.next}`, or point the catch "
                        f"(`on_failure`) at an existing state{close}",
                    )

    def reachability(self, states: Mapping[str, model.State], start_at: str, base: str) -> None:
        if start_at not in states:
            return
        seen = {start_at}
        todo = [start_at]
        while todo:
            for target in _targets(states[todo.pop()]):
                if target in states and target not in seen:
                    seen.add(target)
                    todo.append(target)
        for name in states:
            if name not in seen:
                self.warning(
                    UNREACHABLE,
                    join(base, "states", name),
                    f"`{name}` cannot be reached from the start state `{start_at}`; it never runs.",
                    f"point a `next` (or a choice, catch or timeout) at `{name}`, or remove it",
                )

    def dependencies(self, states: Mapping[str, model.State], base: str, visible: set[str]) -> None:
        edges: dict[str, list[str]] = {}
        for name, state in states.items():
            edges[name] = []
            for i, dep in enumerate(state.depends_on):
                if dep not in visible:
                    self.error(
                        UNKNOWN_DEPENDENCY,
                        join(base, "states", name, "depends_on", i),
                        f"`{name}` depends on `{dep}`, which is not a state.",
                        self._target_fix(dep, visible, verb="depend on"),
                    )
                elif dep in states and dep not in edges[name]:
                    edges[name].append(dep)
        for cycle in _cycles(list(states), edges):
            text = " -> ".join(cycle)
            self.error(
                DEPENDENCY_CYCLE,
                join(base, "states", cycle[0], "depends_on"),
                f"Circular depends_on: {text} (each step waits for the next, so none can run).",
                "remove one of these dependencies to break the cycle",
            )

    # ---- states ----------------------------------------------------------------------------

    def state(self, state: model.State, ptr: str, visible: set[str]) -> None:
        if state.when is not None:
            self.condition(state.when, join(ptr, "when"))
        if isinstance(state, model.TaskState):
            self.task(state, ptr)
        elif isinstance(state, model.ChoiceState):
            for i, rule in enumerate(state.choices):
                self.condition(rule.when, join(ptr, "choices", i, "when"))
            if state.default is None:
                self.warning(
                    CHOICE_NO_DEFAULT,
                    ptr,
                    "The choice has no `default`: when no rule matches, the run fails.",
                    "add `default: <state>` for the case no rule matches",
                )
        elif isinstance(state, model.ParallelState):
            self.parallel(state, ptr, visible)
        elif isinstance(state, model.ForeachState):
            self.values(state.items, join(ptr, "items"))
            self.target_path(state.result_path, join(ptr, "result_path"))
            if not _NAME.match(state.item_name):
                self.error(
                    BAD_NAME,
                    join(ptr, "item_name"),
                    f"`{state.item_name}` is not a valid item name.",
                    "use letters, digits and `_`, starting with a letter or `_`",
                )
            self.graph(
                state.iterator.states,
                state.iterator.start_at,
                join(ptr, "iterator"),
                frozenset(visible),
            )
        elif isinstance(state, model.WaitState):
            self.wait(state, ptr)
        elif isinstance(state, model.SubflowState):
            if self.workflows is not None and state.workflow not in self.workflows:
                self.error(
                    UNKNOWN_WORKFLOW,
                    join(ptr, "workflow"),
                    f"The subflow runs workflow `{state.workflow}`, which does not exist.",
                    self._known_fix(state.workflow, self.workflows, "a workflow"),
                )
            self.values(state.input, join(ptr, "input"))
            self.outputs(state.output, join(ptr, "output"))
            self.target_path(state.result_path, join(ptr, "result_path"))
            self.catches(state.catch, ptr)
        elif isinstance(state, model.SucceedState):
            self.values(state.output, join(ptr, "output"))
        elif isinstance(state, model.FailState):
            self.values(state.cause, join(ptr, "cause"))

    def task(self, task: model.TaskState, ptr: str) -> None:
        self.callee(task.action, task.service, task.operation, ptr, "task")
        self.values(task.input, join(ptr, "input"))
        self.outputs(task.output, join(ptr, "output"))
        self.target_path(task.result_path, join(ptr, "result_path"))
        if task.retry is not None:
            self.retry(task.retry, join(ptr, "retry"))
        self.catches(task.catch, ptr)
        comp = task.compensation
        if comp is not None:
            cptr = join(ptr, "compensation")
            self.callee(comp.action, comp.service, comp.operation, cptr, "compensation")
            self.values(comp.input, join(cptr, "input"))
            if comp.retry is not None:
                self.retry(comp.retry, join(cptr, "retry"))

    def callee(
        self,
        action: str | None,
        service: str | None,
        operation: str | None,
        ptr: str,
        what: str,
    ) -> None:
        uses_service = service is not None or operation is not None
        if action is not None and uses_service:
            self.error(
                TASK_KIND,
                join(ptr, "action"),
                f"The {what} names both an action and a service operation.",
                "keep `action` (a built-in or registered action) or `service` + `operation` "
                "(a connector), not both",
            )
            return
        if action is None and not uses_service:
            self.error(
                TASK_KIND,
                ptr,
                f"The {what} says nothing to run: it has neither `action` nor "
                "`service` + `operation`.",
                "add `action: <name>`, or `service: <name>` and `operation: <capability>`",
            )
            return
        if action is not None:
            if self.actions is not None and action not in self.actions:
                self.error(
                    UNKNOWN_ACTION,
                    join(ptr, "action"),
                    f"No action is registered as `{action}`.",
                    self._known_fix(action, self.actions, "an action"),
                )
            return
        if service is None or operation is None:
            missing = "service" if service is None else "operation"
            self.error(
                TASK_KIND,
                ptr,
                f"The {what} has `{'operation' if service is None else 'service'}` "
                f"but no `{missing}`.",
                f"add `{missing}:`",
            )
            return
        if self.services is None:
            return
        if service not in self.services:
            self.error(
                UNKNOWN_SERVICE,
                join(ptr, "service"),
                f"Service `{service}` is not in the service registry.",
                f"add `{service}` to services.yaml, or "
                + self._known_fix(service, set(self.services), "a service"),
            )
            return
        capabilities = self.services[service]
        if capabilities and operation not in capabilities:
            self.error(
                UNKNOWN_OPERATION,
                join(ptr, "operation"),
                f"Service `{service}` does not offer `{operation}`.",
                f"add `{operation}` to the capabilities of `{service}` in services.yaml, or "
                + self._known_fix(operation, capabilities, "an operation"),
            )

    def parallel(self, state: model.ParallelState, ptr: str, visible: set[str]) -> None:
        count = len(state.branches)
        if not count:
            self.error(
                PARALLEL_BRANCHES,
                join(ptr, "branches"),
                "The parallel state has no branches.",
                "add at least one branch, or replace the parallel state with its one step",
            )
        if isinstance(state.join, model.AtLeast) and state.join.at_least > count:
            self.error(
                JOIN_TOO_LARGE,
                join(ptr, "join", "at_least"),
                f"The join waits for at least {state.join.at_least} branches, but there "
                f"{'is' if count == 1 else 'are'} only {count}.",
                f"use a number from 1 to {count}, or `all`" if count else "add branches",
            )
        self.target_path(state.result_path, join(ptr, "result_path"))
        seen: set[str] = set()
        for k, branch in enumerate(state.branches):
            bptr = join(ptr, "branches", k)
            if not _NAME.match(branch.name):
                self.error(
                    BAD_NAME,
                    join(bptr, "name"),
                    f"`{branch.name}` is not a valid branch name.",
                    "use letters, digits, `_` and `-`, starting with a letter or `_` "
                    f"(for example `{_suggest_name(branch.name)}`)",
                )
            if branch.name in seen:
                self.error(
                    PARALLEL_BRANCHES,
                    join(bptr, "name"),
                    f"Two branches are named `{branch.name}`.",
                    "give every branch of a parallel state its own name",
                )
            seen.add(branch.name)
            self.graph(branch.states, branch.start_at, bptr, frozenset(visible))

    def wait(self, state: model.WaitState, ptr: str) -> None:
        given = [
            key
            for key, value in (
                ("duration", state.duration),
                ("until", state.until),
                ("event", state.event),
            )
            if value is not None
        ]
        if len(given) != 1:
            self.error(
                WAIT_KIND,
                ptr,
                "The wait names nothing to wait for."
                if not given
                else f"The wait names {' and '.join(f'`{g}`' for g in given)}; "
                "it can wait for one only.",
                "keep exactly one of `duration`, `until` and `event` "
                "(use an event `timeout` to wait for an event at most so long)",
            )
        if state.until is not None:
            self.until(state.until, join(ptr, "until"))
        if state.event is not None:
            self.values(state.event.correlation, join(ptr, "event", "correlation"))
        self.target_path(state.result_path, join(ptr, "result_path"))

    def until(self, value: Any, ptr: str) -> None:
        if isinstance(value, str) and (value.strip().startswith("$") or "{{" in value):
            self.values(value, ptr)
            return
        if isinstance(value, datetime.datetime):
            instant: datetime.datetime | None = value
        elif isinstance(value, str):
            try:
                instant = datetime.datetime.fromisoformat(value.strip())
            except ValueError:
                instant = None
        else:
            instant = None
        if instant is None or instant.tzinfo is None:
            self.error(
                BAD_INSTANT,
                ptr,
                f"`until` is {value!r:.60}, which is neither an expression nor an "
                "ISO-8601 instant with a zone.",
                "write an instant like `2025-01-31T09:00:00Z`, or an expression like "
                "`$.input.deadline`",
            )

    def catches(self, catches: Iterable[model.Catch], ptr: str) -> None:
        for i, catch in enumerate(catches):
            self.target_path(catch.result_path, join(ptr, "catch", i, "result_path"))

    def retry(self, policy: model.RetryPolicy, ptr: str) -> None:
        if policy.initial_interval > policy.max_interval:
            self.warning(
                RETRY_INTERVALS,
                join(ptr, "initial_interval"),
                f"The first retry waits {policy.initial_interval:g}s, more than the "
                f"maximum wait of {policy.max_interval:g}s, so every retry waits "
                f"{policy.max_interval:g}s.",
                "make `initial_interval` at most `max_interval`, or raise `max_interval`",
            )

    # ---- expressions -----------------------------------------------------------------------

    def values(self, value: Any, ptr: str) -> None:
        """Every path and template in a value, each reported where it is."""
        from legato.dsl import expr

        if isinstance(value, str):
            for problem in expr.check(value):
                self.error(BAD_EXPRESSION, ptr, *_problem(problem))
        elif isinstance(value, Mapping):
            for key, item in value.items():
                self.values(item, join(ptr, key))
        elif isinstance(value, list | tuple):
            for i, item in enumerate(value):
                self.values(item, join(ptr, i))

    def outputs(self, output: Mapping[str, Any] | None, ptr: str) -> None:
        if not output:
            return
        for target, source in output.items():
            self.target_path(target, join(ptr, target))
            self.values(source, join(ptr, target))

    def target_path(self, path: str | None, ptr: str) -> None:
        if path is None:
            return
        from legato.dsl import expr

        problems = expr.check(path) if path.startswith("$") else []
        for problem in problems:
            self.error(BAD_EXPRESSION, ptr, *_problem(problem))
        if not problems and not _TARGET_PATH.match(path):
            self.error(
                BAD_TARGET_PATH,
                ptr,
                f"`{path}` is not a place a result can be written to.",
                "write to a simple path like `$.customer.id` or `$.items[0]` "
                "(no wildcards, filters, slices, `..` or bare `$`)",
            )

    def condition(self, cond: model.Condition, ptr: str) -> None:
        from legato.dsl import expr

        if isinstance(cond, model.AllOf):
            for i, item in enumerate(cond.all):
                self.condition(item, join(ptr, "all", i))
        elif isinstance(cond, model.AnyOf):
            for i, item in enumerate(cond.any):
                self.condition(item, join(ptr, "any", i))
        elif isinstance(cond, model.Not):
            self.condition(cond.not_, join(ptr, "not"))
        else:
            for problem in expr.check_condition(cond):
                self.error(BAD_EXPRESSION, ptr, *_problem(problem))

    # ---- wording ---------------------------------------------------------------------------

    @staticmethod
    def _target_fix(target: str, names: Iterable[str], *, verb: str = "go to") -> str:
        names = sorted(names)
        hint = did_you_mean(target, names)
        if hint:
            return f"name an existing state{hint}"
        return f"{verb} one of {one_of(names)}, or add a state named `{target}`"

    @staticmethod
    def _known_fix(name: str, known: Iterable[str], what: str) -> str:
        known = sorted(known)
        hint = did_you_mean(name, known)
        if hint:
            return f"name {what} that exists{hint}"
        return f"use one of {one_of(known)}"


def _targets(state: model.State) -> list[str]:
    out: list[str] = []
    if state.next is not None:
        out.append(state.next)
    if isinstance(state, model.ChoiceState):
        out.extend(rule.next for rule in state.choices)
        if state.default is not None:
            out.append(state.default)
    if isinstance(state, model.TaskState | model.SubflowState):
        out.extend(c.next for c in state.catch)
    if isinstance(state, model.WaitState) and state.event and state.event.timeout_next:
        out.append(state.event.timeout_next)
    return out


def _cycles(order: list[str], edges: Mapping[str, list[str]]) -> list[list[str]]:
    """Each elementary cycle found by a depth-first search, once, starting at its earliest
    state in ``order`` and ending where it started (``[a, b, a]``)."""
    rank = {name: i for i, name in enumerate(order)}
    state = dict.fromkeys(order, 0)  # 0 new, 1 on the path, 2 done
    found: list[list[str]] = []
    seen: set[frozenset[str]] = set()
    for root in order:
        if state[root]:
            continue
        state[root] = 1
        path = [root]
        stack = [iter(edges.get(root, []))]
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
                continue
            if state[nxt] == 0:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(edges.get(nxt, [])))
            elif state[nxt] == 1:
                cycle = path[path.index(nxt) :]
                key = frozenset(cycle)
                if key not in seen:
                    seen.add(key)
                    first = min(range(len(cycle)), key=lambda i: rank[cycle[i]])
                    cycle = cycle[first:] + cycle[:first]
                    found.append([*cycle, cycle[0]])
    return found


def _problem(text: str) -> tuple[str, str]:
    """Split expr's "what is wrong. Hint: how to fix" into a message and a fix."""
    what, _, hint = text.strip().partition(" Hint: ")
    what = what.strip() or "The expression is not valid"
    what = what[0].upper() + what[1:]
    if not what.endswith((".", "?", "!")):
        what += "."
    hint = hint.strip().rstrip(".")
    return what, hint or _EXPR_FIX


def _suggest_name(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9_\-]+", "_", name).strip("_") or "step"
    return cleaned if re.match(r"[A-Za-z_]", cleaned) else f"_{cleaned}"
