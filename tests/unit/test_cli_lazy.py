"""`piqc-slurm` registers each command on first use (cli.COMMAND_MODULES): the map must name every
command the modules register, no more, and a command run that way must load only its own module."""

from __future__ import annotations

import json
import subprocess
import sys

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
