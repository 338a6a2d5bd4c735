"""Layers only import downward: CLI and hooks on top; rules, parsing,
aggregation and the store below. Each module's rank is written here by
hand; a module may import piqc_slurm modules of its own rank or lower."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

PKG = Path(__file__).resolve().parents[2] / "piqc_slurm"

# Longest prefix wins.
RANKS = {
    "piqc_slurm.errors": 0, "piqc_slurm.fsutil": 0, "piqc_slurm.timespec": 0, "piqc_slurm.data": 0,
    "piqc_slurm": 0,  # __init__ (version)
    "piqc_slurm.usage": 1, "piqc_slurm.slurm": 1, "piqc_slurm.config": 1, "piqc_slurm.logsetup": 1,
    "piqc_slurm.usage.efficiency": 1,
    "piqc_slurm.analyze.rules": 1,  # pure (math): the nightly analysis, the Epilog report and the live watch
    "piqc_slurm.summary": 2, "piqc_slurm.sampler": 2,
    "piqc_slurm.store": 3, "piqc_slurm.mail": 3,
    "piqc_slurm.notify": 5,
    "piqc_slurm.spoolreplay": 4, "piqc_slurm.query": 4, "piqc_slurm.analyze": 4,
    "piqc_slurm.report": 5, "piqc_slurm.ingest": 5, "piqc_slurm.sim": 5,
    "piqc_slurm.costs": 5, "piqc_slurm.analysis": 5, "piqc_slurm.gaps": 5, "piqc_slurm.digest": 5,
    "piqc_slurm.nightly": 6,
    "piqc_slurm.doctor": 6, "piqc_slurm.hooks": 6, "piqc_slurm.query.command": 6, "piqc_slurm.commands": 6,
    # stdlib (and fsutil) only: the Epilog's report writer, and the sampler's live notices (sampler.oncall)
    "piqc_slurm.hooks.jobinfo": 2, "piqc_slurm.hooks.userreport": 2, "piqc_slurm.hooks.context": 2,
    "piqc_slurm.cli": 7, "piqc_slurm.__main__": 7,
}


def rank(module: str) -> int:
    parts = module.split(".")
    for i in range(len(parts), 0, -1):
        r = RANKS.get(".".join(parts[:i]))
        if r is not None:
            return r
    raise AssertionError(f"{module} has no rank in tests/unit/test_layers.py: give it one")


def modules():
    for path in sorted(PKG.rglob("*.py")):
        if "migrations" in path.parts:
            continue
        rel = path.relative_to(PKG.parent).with_suffix("")
        name = ".".join(rel.parts)
        yield name.removesuffix(".__init__"), path


def imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("piqc_slurm"):
            yield node.module, node.lineno
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("piqc_slurm"):
                    yield a.name, node.lineno


def test_every_import_points_down():
    bad = []
    for name, path in modules():
        mine = rank(name)
        for target, line in imports(path):
            if rank(target) > mine:
                bad.append(f"{path.relative_to(PKG.parent)}:{line}: {name} (rank {mine}) imports {target} "
                           f"(rank {rank(target)})")
    assert not bad, "\n".join(bad)


def test_the_rule_can_fail():
    # The hook layer above the store: a store module importing hooks would be caught.
    assert rank("piqc_slurm.store.summaries") < rank("piqc_slurm.hooks.summary")
    assert rank("piqc_slurm.report.seff") > rank("piqc_slurm.query.gpu")
