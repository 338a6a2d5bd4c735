"""docs/reference.md (written by docs/reference.sh from the commands' --help) names every command."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "reference.md"


def test_every_command_has_its_section():
    from piqc_slurm.cli import _build_cli

    doc = REFERENCE.read_text()
    cli = _build_cli()
    for name, cmd in cli.commands.items():
        assert f"### `piqc-slurm {name}`" in doc, f"{name}: run bash docs/reference.sh"
        for sub in getattr(cmd, "commands", {}):
            assert f"### `piqc-slurm {name} {sub}`" in doc, f"{name} {sub}: run bash docs/reference.sh"
