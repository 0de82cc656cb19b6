"""``legato lint``: every accepted format (the seed documents), rule codes and locations,
``--services``, ``--activities`` and ``--json``."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from tests.e2e.conftest import SEEDS, Cli, InProcess, one_json_object

SEED_000 = SEEDS / "000_employee_onboarding.json"
SEED_001 = SEEDS / "001_user_welcome.json"
SEED_002 = SEEDS / "002_customer_onboarding.json"
SEED_002_API = SEEDS / "002_customer_onboarding_api.json"
SERVICES = SEEDS / "000_services.yaml"

# file:pointer: severity code message Fix: ...
FINDING = re.compile(
    r"^(?P<file>[^:]+):(?P<pointer>/\S*): (?P<severity>error|warning) (?P<code>L\d{3}) "
)


@pytest.fixture
def seeds(cli: Cli) -> Path:
    """The seed documents, copied next to the test's database (short, stable names)."""
    for seed in SEEDS.iterdir():
        shutil.copy(seed, cli.cwd / seed.name)
    return cli.cwd


def findings(stdout: str) -> list[dict[str, str]]:
    return [m.groupdict() for line in stdout.splitlines() if (m := FINDING.match(line))]


def test_seed_000_has_one_warning_and_passes(seeds: Path, legato: InProcess) -> None:
    proc = legato("lint", SEED_000.name, db=False)

    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert findings(proc.stdout) == [
        {
            "file": SEED_000.name,
            "pointer": "/workflow/states/create_hr_record/on_failure",
            "severity": "warning",
            "code": "L102",
        }
    ]
    assert "notify_hr_failure" in proc.stdout
    assert "Fix: " in proc.stdout
    assert len(proc.stdout.splitlines()) == 1  # one finding, one line


def test_seed_001_is_clean(seeds: Path, legato: InProcess) -> None:
    proc = legato("lint", SEED_001.name, db=False)

    assert proc.returncode == 0
    assert proc.stdout.strip() == f"{SEED_001.name}: ok (steps format)"


def test_seed_002_needs_its_activities(seeds: Path, legato: InProcess) -> None:
    proc = legato("lint", SEED_002.name, SEED_002_API.name, db=False)

    assert proc.returncode == 2
    assert findings(proc.stdout) == [
        {"file": SEED_002.name, "pointer": "/steps/0/type", "severity": "error", "code": "L107"},
        {"file": SEED_002.name, "pointer": "/steps/1/type", "severity": "error", "code": "L107"},
        {
            "file": SEED_002_API.name,
            "pointer": "/steps/0/type",
            "severity": "error",
            "code": "L107",
        },
    ]
    assert "`assign_plan`" in proc.stdout


def test_seed_002_passes_with_the_activities_that_implement_it(
    seeds: Path, legato: InProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    (seeds / "lint_billing_activities.py").write_text(
        "import legato\n\n"
        "@legato.activity('assign_plan')\n"
        "def assign_plan(plan_id, currency):\n"
        "    return {'plan': plan_id}\n\n"
        "@legato.activity('create_wallet')\n"
        "def create_wallet(currency, conversion_rate, initial_credits):\n"
        "    return {'credits': initial_credits}\n",
        encoding="utf-8",
    )
    monkeypatch.syspath_prepend(str(seeds))

    proc = legato(
        "lint", SEED_002.name, SEED_002_API.name, "-a", "lint_billing_activities", db=False
    )

    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ordered format" in proc.stdout
    assert findings(proc.stdout) == []


def test_services_registry_reports_the_unknown_service(seeds: Path, legato: InProcess) -> None:
    proc = legato("lint", SEED_000.name, "--services", SERVICES.name, db=False)

    assert proc.returncode == 2
    found = {(f["pointer"], f["code"]) for f in findings(proc.stdout)}
    assert ("/workflow/states/setup_it_accounts/service", "L108") in found
    line = next(x for x in proc.stdout.splitlines() if "L108" in x)
    assert "`it-provisioning`" in line
    assert "Fix: add `it-provisioning` to services.yaml" in line


def test_lint_json_reports_every_format_and_finding(seeds: Path, legato: InProcess) -> None:
    names = [SEED_000.name, SEED_001.name, SEED_002.name, SEED_002_API.name]

    proc = legato("lint", *names, "--services", SERVICES.name, "--json", db=False)

    assert proc.returncode == 2
    report = one_json_object(proc.stdout)
    assert [f["file"] for f in report["files"]] == names
    assert [f["format"] for f in report["files"]] == ["states", "steps", "ordered", "ordered"]
    every = [finding for f in report["files"] for finding in f["findings"]]
    assert report["errors"] == sum(1 for f in every if f["severity"] == "error") > 0
    for finding in every:
        assert set(finding) >= {"code", "severity", "pointer", "message", "fix"}
        assert re.fullmatch(r"L\d{3}", finding["code"])
        assert finding["pointer"].startswith("/")
        assert finding["fix"]
    l108 = [f for f in report["files"][0]["findings"] if f["code"] == "L108"]
    assert l108[0]["pointer"] == "/workflow/states/setup_it_accounts/service"
    assert "it-provisioning" in l108[0]["message"]


def test_the_canonical_format_and_a_syntax_error(cli: Cli, legato: InProcess) -> None:
    cli.write(
        "good.yaml",
        "name: good\nstart_at: a\nstates:\n  a: {type: succeed}\n",
    )
    cli.write("broken.yaml", "name: broken\nstates: {a: [\n")

    proc = legato("lint", "good.yaml", "broken.yaml", db=False)

    assert proc.returncode == 2
    assert "good.yaml: ok (canonical format)" in proc.stdout
    assert [f["code"] for f in findings(proc.stdout) if f["file"] == "broken.yaml"] == ["L000"]


def test_finding_text_is_printed_verbatim(cli: Cli, legato: InProcess) -> None:
    # names are the user's text: they must not be read as console markup
    cli.write(
        "odd.yaml",
        "name: odd\nstart_at: a\nstates:\n  a: {type: task, action: noop, next: '[/b][bold]x'}\n",
    )

    proc = legato("lint", "odd.yaml", db=False)
    run = legato("run", "odd.yaml")

    assert proc.returncode == 2
    assert "`[/b][bold]x`" in proc.stdout
    assert run.returncode == 2
    assert "`[/b][bold]x`" in run.stderr


def test_lint_a_missing_file(legato: InProcess) -> None:
    proc = legato("lint", "nowhere.yaml", db=False)

    assert proc.returncode == 2
    assert "'nowhere.yaml' does not exist" in proc.stderr
    assert "Fix:" in proc.stderr


def test_lint_does_not_touch_a_database(cli: Cli, legato: InProcess) -> None:
    cli.write(
        "good.json",
        json.dumps({"name": "g", "start_at": "a", "states": {"a": {"type": "succeed"}}}),
    )
    assert legato("lint", "good.json", db=False).returncode == 0
    assert not cli.db.exists()
