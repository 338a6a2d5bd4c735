"""`piqc-slurm` registers each command on first use (cli.COMMAND_MODULES): the map must name every
command the modules register, no more, and a command run that way must load only its own module."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import pytest

from piqc_slurm import cli as C

pytestmark = pytest.mark.unit


def test_the_map_names_exactly_the_commands_the_modules_register():
    eager = C._build_cli()
    # what each module adds to an empty group, by the modules themselves
    found = {}
    for module in dict.fromkeys(C.COMMAND_MODULES.values()):
        g = click.Group()
        C._register(g, module)
        found.update({name: module for name in g.commands})
    assert found == C.COMMAND_MODULES
    assert set(eager.commands) == set(found) | {"prolog", "epilog"}


def test_the_lazy_group_lists_and_resolves_the_same_commands():
    eager, lazy = C._build_cli(), C._build_cli(lazy=True)
    ctx = click.Context(lazy)
    assert lazy.list_commands(ctx) == sorted(eager.commands)
    for name, cmd in eager.commands.items():
        got = C._build_cli(lazy=True).get_command(click.Context(lazy), name)
        assert got is not None and got.name == cmd.name and got.help == cmd.help, name
    assert C._build_cli(lazy=True).get_command(click.Context(lazy), "no-such-command") is None


def test_a_command_run_loads_only_its_own_module():
    code = ("import sys, json\nfrom piqc_slurm import cli\n"
            "try:\n    cli.main(['sacct', '--helpformat'])\nexcept SystemExit:\n    pass\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('piqc_slurm.commands.'))))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.splitlines()[-1]) == []  # sacct lives in query.command: no commands.* module
    r = subprocess.run([sys.executable, "-m", "piqc_slurm", "no-such-command"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and "No such command" in r.stderr, r.stderr


def test_a_plain_sacct_listing_does_not_load_prices_efficiency_or_json(tmp_path):
    """`sacct -j` / a window prints no GPU, efficiency or JSON field: query.gpu, usage.efficiency
    and query.sacctjson (30 ms of imports, bench floor.imports_sacct) stay unloaded; -o CostUSD loads
    query.gpu."""
    db = f"sqlite:///{tmp_path}/piqc.db"
    code = ("import sys, json\nfrom piqc_slurm import cli\n"
            "try:\n    cli.main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print(json.dumps(sorted(m for m in ('piqc_slurm.query.gpu', 'piqc_slurm.usage.efficiency',"
            " 'piqc_slurm.query.sacctjson', 'piqc_slurm.slurm.records') if m in sys.modules)))")

    def loaded(*args: str) -> list[str]:
        r = subprocess.run([sys.executable, "-c", code, "--db", db, *args], capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout.splitlines()[-1])

    fixture = Path(__file__).resolve().parents[1] / "fixtures" / "sacct" / "22.05.8" / "completed.ingest.txt"
    r = subprocess.run([sys.executable, "-m", "piqc_slurm", "--db", db, "ingest", "--create-store", "-q",
                        "--sacct-file", str(fixture)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    job = fixture.read_text().split(" -j ", 1)[1].split()[0]  # the job its "# command:" line captured
    assert loaded("sacct", "-a", "-j", job) == []
    assert loaded("sacct", "-a", "-X", "-S", "2020-01-01", "-E", "now") == []
    assert loaded("sacct", "-a", "-j", job, "-o", "JobID,CostUSD") == ["piqc_slurm.query.gpu"]
    assert loaded("sacct", "-a", "-j", job, "-o", "JobID,TimeEff") == ["piqc_slurm.usage.efficiency"]
