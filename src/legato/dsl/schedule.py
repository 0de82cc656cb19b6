"""The schedule of a scheduled trigger: reading ``trigger.schedule`` and computing its ticks.

``trigger: {type: scheduled, schedule: "*/5 * * * *"}``, or the object form
``schedule: {cron: "0 9 * * 1-5", timezone: "Europe/Berlin", catch_up: one,
max_catch_up: 100}``. :func:`schedule_issues` lists what is wrong with one, each issue
with a JSON pointer inside the schedule, a message and a fix (lint rule L121 reports
them); :func:`parse_schedule` reads one into a :class:`Schedule` or raises the first issue
as a DefinitionError. The scheduler (:mod:`legato.triggers.cron`) uses both.

Pure: a tick is computed from the instant it is given, never from the clock.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from croniter import CroniterBadDateError, croniter

from legato.dsl.findings import escape, suggest
from legato.errors import DefinitionError

__all__ = [
    "CATCH_UP_POLICIES",
    "DEFAULT_CATCH_UP",
    "MAX_CATCH_UP",
    "MAX_CATCH_UP_LIMIT",
    "CatchUp",
    "Schedule",
    "ScheduleIssue",
    "parse_schedule",
    "schedule_issues",
    "schedule_problems",
]

CatchUp = Literal["none", "one", "all"]
CATCH_UP_POLICIES: tuple[CatchUp, ...] = ("none", "one", "all")
DEFAULT_CATCH_UP: CatchUp = "one"
MAX_CATCH_UP = 100
MAX_CATCH_UP_LIMIT = 1000
_MACROS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
_SCHEDULE_KEYS = ("cron", "timezone", "catch_up", "max_catch_up")
# The five fields of a cron expression: name, accepted values.
_FIELDS = (
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day-of-month", "1-31"),
    ("month", "1-12 or JAN-DEC"),
    ("day-of-week", "0-7 or SUN-SAT"),
)
_CRON_EXAMPLES = '"*/5 * * * *" (every five minutes) or "0 9 * * 1-5" (09:00 on weekdays)'
_EXAMPLE = (
    '`schedule: "*/5 * * * *"` or '
    '`schedule: {cron: "0 9 * * 1-5", timezone: "Europe/Berlin", catch_up: one}`'
)
# A fixed instant to ask whether an expression ever fires (so the answer is deterministic).
_ANCHOR = datetime(2000, 1, 1, tzinfo=UTC)
_TINY = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class Schedule:
    """A parsed schedule: a 5-field cron expression (or a macro such as ``@hourly``) read
    in ``timezone``, and what to do with missed ticks."""

    cron: str
    timezone: str = "UTC"
    catch_up: CatchUp = DEFAULT_CATCH_UP
    max_catch_up: int = MAX_CATCH_UP

    @property
    def fingerprint(self) -> str:
        """What the stored progress was computed for; a change re-anchors it."""
        return f"{self.cron}|{self.timezone}"

    def _zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def next_after(self, at: datetime) -> datetime:
        """The first tick strictly after ``at`` (UTC)."""
        it = croniter(self.cron, at.astimezone(self._zone()))
        return cast(datetime, it.get_next(datetime)).astimezone(UTC)

    def at_or_before(self, at: datetime) -> datetime:
        """The latest tick at or before ``at`` (UTC)."""
        it = croniter(self.cron, (at + _TINY).astimezone(self._zone()))
        return cast(datetime, it.get_prev(datetime)).astimezone(UTC)

    def before(self, at: datetime) -> datetime:
        """The latest tick strictly before ``at`` (UTC)."""
        it = croniter(self.cron, at.astimezone(self._zone()))
        return cast(datetime, it.get_prev(datetime)).astimezone(UTC)


@dataclass(frozen=True, slots=True)
class ScheduleIssue:
    """One thing wrong with a schedule. ``pointer`` is a JSON pointer inside the schedule
    (``""`` is the schedule itself, ``/timezone`` its time zone)."""

    pointer: str
    message: str
    fix: str

    def __str__(self) -> str:
        return f"{self.message}; {self.fix}"


def schedule_issues(value: Any) -> list[ScheduleIssue]:
    """Everything wrong with a trigger's ``schedule`` (empty when it is valid)."""
    return _read(value)[1]


def schedule_problems(value: Any) -> list[str]:
    """What is wrong with a trigger's ``schedule``, as text (empty when it is valid)."""
    return [str(issue) for issue in schedule_issues(value)]


def parse_schedule(value: Any) -> Schedule:
    """Read ``trigger.schedule``: a cron string, or ``{cron, timezone, catch_up,
    max_catch_up}``. DefinitionError says what is wrong and how to write it."""
    schedule, issues = _read(value)
    if issues:
        first = issues[0]
        raise DefinitionError(str(first), details={"pointer": "/trigger/schedule" + first.pointer})
    assert schedule is not None
    return schedule


# ---- reading ------------------------------------------------------------------------------------


def _read(value: Any) -> tuple[Schedule | None, list[ScheduleIssue]]:
    if value is None:
        return None, [ScheduleIssue("", "a scheduled trigger needs a schedule", f"add {_EXAMPLE}")]
    if isinstance(value, str):
        spec: dict[str, Any] = {"cron": value}
        at = ""  # the string is the cron expression
    elif isinstance(value, dict):
        spec = dict(value)
        at = "/cron"
    else:
        return None, [
            ScheduleIssue(
                "",
                f"trigger.schedule must be a cron string or an object, not {value!r:.60}",
                f"write {_EXAMPLE}",
            )
        ]
    issues = [
        ScheduleIssue(
            f"/{escape(key)}",
            f"trigger.schedule has an unknown key {key!r}",
            f"remove it; a schedule's keys are {', '.join(_SCHEDULE_KEYS)}",
        )
        for key in sorted(set(spec) - set(_SCHEDULE_KEYS), key=str)
    ]
    cron, issue = _cron(spec.get("cron"), at)
    timezone = spec.get("timezone", "UTC")
    zone_issue = _timezone(timezone)
    if issue is None and zone_issue is None:
        assert cron is not None
        issue = _fires(cron, timezone, at)
    issues += [i for i in (issue, zone_issue) if i is not None]
    catch_up = spec.get("catch_up", DEFAULT_CATCH_UP)
    if catch_up not in CATCH_UP_POLICIES:
        issues.append(
            ScheduleIssue(
                "/catch_up",
                f"trigger.schedule.catch_up must be one of {', '.join(CATCH_UP_POLICIES)}, "
                f"not {catch_up!r:.60}",
                "use `none` (skip missed ticks), `one` (fire the latest once) or `all`",
            )
        )
    max_catch_up = spec.get("max_catch_up", MAX_CATCH_UP)
    if (
        not isinstance(max_catch_up, int)
        or isinstance(max_catch_up, bool)
        or not 1 <= max_catch_up <= MAX_CATCH_UP_LIMIT
    ):
        issues.append(
            ScheduleIssue(
                "/max_catch_up",
                f"trigger.schedule.max_catch_up must be an integer from 1 to "
                f"{MAX_CATCH_UP_LIMIT}, not {max_catch_up!r:.60}",
                f"use a whole number from 1 to {MAX_CATCH_UP_LIMIT}, or leave it out "
                f"(default {MAX_CATCH_UP})",
            )
        )
    if issues:
        return None, issues
    assert cron is not None
    return Schedule(cron, timezone, catch_up, max_catch_up), []


def _cron(value: Any, at: str) -> tuple[str | None, ScheduleIssue | None]:
    """The expression, normalised (white space folded, a macro lower-case), or its issue."""
    if not isinstance(value, str) or not value.strip():
        return None, ScheduleIssue(
            at,
            'trigger.schedule.cron must be a cron expression such as "*/5 * * * *"',
            f"write a 5-field cron expression, e.g. {_CRON_EXAMPLES}",
        )
    cron = " ".join(value.split())
    if cron.startswith("@"):
        if cron.lower() not in _MACROS:
            return None, ScheduleIssue(
                at,
                f"unknown cron macro {cron!r}",
                f"use one of {', '.join(_MACROS)}, or a 5-field cron expression",
            )
        return cron.lower(), None
    fields = cron.split(" ")
    shape = "minute hour day-of-month month day-of-week"
    if len(fields) != 5:
        return None, ScheduleIssue(
            at,
            f"{cron!r} is not a 5-field cron expression ({shape}): it has "
            f"{len(fields)} field{'s' if len(fields) != 1 else ''}"
            + (" (a seconds field is not accepted)" if len(fields) == 6 else ""),
            f"write five fields, e.g. {_CRON_EXAMPLES}",
        )
    if _valid(cron):
        return cron, None
    for index, ((name, values), field) in enumerate(zip(_FIELDS, fields, strict=True)):
        alone = ["*"] * 5
        alone[index] = field
        if not _valid(" ".join(alone)):
            return None, ScheduleIssue(
                at,
                f"{cron!r} is not a valid 5-field cron expression ({shape}): its "
                f"{name} field {field!r} is not valid",
                f"write the {name} as *, a value in {values}, a range (a-b), a list (a,b) "
                f"or a step (*/n), e.g. {_CRON_EXAMPLES}",
            )
    return None, ScheduleIssue(
        at,
        f"{cron!r} is not a valid 5-field cron expression ({shape})",
        f"write five fields, e.g. {_CRON_EXAMPLES}",
    )


def _valid(cron: str) -> bool:
    return bool(croniter.is_valid(cron))


def _fires(cron: str, timezone: str, at: str) -> ScheduleIssue | None:
    """An issue when the expression names no date that exists (``0 0 30 2 *``)."""
    try:
        croniter(cron, _ANCHOR.astimezone(ZoneInfo(timezone))).get_next(datetime)
    except CroniterBadDateError:
        return ScheduleIssue(
            at,
            f"{cron!r} never fires: none of its months has its day of the month",
            "correct the day-of-month or the month (February has no 30th or 31st; April, "
            "June, September and November have no 31st)",
        )
    return None


def _timezone(value: Any) -> ScheduleIssue | None:
    fix = "use an IANA name such as 'UTC' or 'Europe/Berlin'"
    if not isinstance(value, str):
        return ScheduleIssue(
            "/timezone", f"trigger.schedule.timezone must be an IANA name, not {value!r:.60}", fix
        )
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        close = _close_zones(value)
        if close:
            fix = f"use an IANA name: did you mean {' or '.join(repr(z) for z in close)}?"
        return ScheduleIssue("/timezone", f"unknown time zone {value!r}", fix)
    return None


def _close_zones(name: str) -> list[str]:
    """Time zone names like ``name``: the same but for case, else close spellings."""
    zones = _zones()
    same = [z for z in zones if z.lower() == name.strip().lower()]
    return same or suggest(name, zones)


@functools.cache
def _zones() -> frozenset[str]:
    return frozenset(available_timezones())
