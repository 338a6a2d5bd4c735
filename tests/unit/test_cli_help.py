"""`piqc-slurm --help` advertises only commands that exist, and lists every one that does.

The help texts come from the real entry point (a subprocess per `--help`); the
commands from the click group itself, so a command added or removed (e.g. `db`,
`spool`) needs no edit here. Every `piqc-slurm WORD` in any help text must be a
registered command, and `piqc-slurm GROUP WORD` a registered subcommand of GROUP.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest

pytestmark = pytest.mark.unit

# `piqc-slurm WORD` (across a line break: click rewraps), with `prolog|epilog` alternatives,
# and the word after it, for groups' subcommands.
MENTION = re.compile(r"piqc-slurm\s+([a-z][a-z0-9_-]*(?:\|[a-z][a-z0-9_-]*)*)(?:\s+([a-z][a-z0-9_-]*))?")
# Where a help text names a command: in backticks (the help texts' convention in prose), or at the
# start of a line (the Usage line, the example blocks). Prose that names the program itself
# ("... upgrading piqc-slurm there", "... all piqc-slurm shows.") is neither.
BACKTICKED = re.compile(r"`([^`]*)`")
LINE_START = re.compile(r"^\s*(?:Usage:\s+|\$\s+)?(?=piqc-slurm\s)", re.M)


def the_cli() -> click.Group:
    from piqc_slurm.cli import _build_cli

    return _build_cli()


def visible(group: click.Group) -> dict[str, click.Command]:
    return {name: cmd for name, cmd in group.commands.items() if not cmd.hidden}


def exe() -> list[str]:
    """The installed console script next to this interpreter, else `python -m piqc_slurm`."""
    script = Path(sys.executable).parent / "piqc-slurm"
    return [str(script)] if script.exists() else [sys.executable, "-m", "piqc_slurm"]


def helps(argvs: list[list[str]]) -> dict[tuple[str, ...], str]:
    """Each argv's `--help` text, run side by side."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIQC_")}
    env["COLUMNS"] = "80"
    procs = {tuple(a): subprocess.Popen(exe() + a + ["--help"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True, env=env) for a in argvs}
    out = {}
    for key, p in procs.items():
        stdout, stderr = p.communicate(timeout=120)
        assert p.returncode == 0, (key, stderr)
        out[key] = stdout
    return out


def listed(help_text: str) -> set[str]:
    """The names in a help text's `Commands:` section."""
    section = help_text.partition("\nCommands:\n")[2]
    names = set()
    for line in section.splitlines():
        if not line.strip():
            break
        m = re.match(r"^  ([a-z][a-z0-9_-]*)(?:\s|$)", line)
        if m:
            names.add(m[1])
    return names


def mentions(text: str) -> list[re.Match]:
    """The command mentions of a help text, in backticks or at a line's start."""
    found = [m for span in BACKTICKED.findall(text) for m in MENTION.finditer(span)]
    found += [m for start in LINE_START.finditer(text) if (m := MENTION.match(text, start.end()))]
    return found


def unknown_mentions(text: str, group: click.Group) -> list[str]:
    """Every `piqc-slurm WORD [SUB]` in text that names no registered command (or subcommand)."""
    bad = []
    for m in mentions(text):
        words, sub = m[1].split("|"), m[2]
        for word in words:
            cmd = group.commands.get(word)
            if cmd is None:
                bad.append(f"piqc-slurm {word}")
            elif isinstance(cmd, click.Group) and len(words) == 1 and sub is not None and sub not in cmd.commands:
                bad.append(f"piqc-slurm {word} {sub}")
    return bad


@pytest.fixture(scope="module")
def texts() -> dict[tuple[str, ...], str]:
    group = the_cli()
    argvs: list[list[str]] = [[]]
    for name, cmd in group.commands.items():
        argvs.append([name])
        if isinstance(cmd, click.Group):
            argvs += [[name, sub] for sub in cmd.commands]
    return helps(argvs)


def test_the_checker_catches_a_command_that_does_not_exist():
    group = the_cli()
    text = ("Usage: piqc-slurm frobnicate [OPTIONS]\n  Nightly:\n    piqc-slurm frobnicate -S now-1day\n"
            "  then `piqc-slurm\n  sacct -e`, `piqc-slurm config frobnicate` and `piqc-slurm prolog|frobnicate`.\n")
    assert sorted(unknown_mentions(text, group)) == ["piqc-slurm config frobnicate", "piqc-slurm frobnicate",
                                                     "piqc-slurm frobnicate", "piqc-slurm frobnicate"]
    assert unknown_mentions("run `piqc-slurm sacct -e`, `piqc-slurm config show`, `piqc-slurm prolog|epilog`\n"
                            "  after upgrading piqc-slurm there; all piqc-slurm shows.\n"
                            "Usage: piqc-slurm config show [OPTIONS]\n", group) == []
    assert listed("Usage: x\n\nCommands:\n  alpha  Does a.\n  beta   Does b...\n\nMore:\n  gamma  x\n") == \
        {"alpha", "beta"}


def test_every_command_mentioned_in_any_help_exists(texts):
    group = the_cli()
    assert len(texts) == 1 + sum(1 + len(getattr(c, "commands", {})) for c in group.commands.values())
    mentioned = 0
    for argv, text in texts.items():
        assert not unknown_mentions(text, group), (" ".join(("piqc-slurm", *argv, "--help")),
                                                   unknown_mentions(text, group))
        mentioned += len(mentions(text))
    assert mentioned > len(texts)        # the pattern does see the texts' examples and Usage lines


def test_the_top_level_help_lists_every_registered_command(texts):
    group = the_cli()
    assert listed(texts[()]) == set(visible(group))
    for name, cmd in group.commands.items():
        if isinstance(cmd, click.Group):
            assert listed(texts[(name,)]) == set(visible(cmd)), name
