"""`spool prune` deletes what the store has taken in once it is older than the
retention, and never a summary the store lacks. Real files, a real SQLite
store filled by the real replay and push."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from piqc_slurm.hooks.deliver import push
from piqc_slurm.hooks.spool import Spool
from piqc_slurm.spoolreplay import prune, replay
from piqc_slurm.store.db import open_engine

pytestmark = pytest.mark.unit
FX = Path(__file__).resolve().parents[1] / "fixtures" / "summaries"
NOW = 1800000000
DAY = 86400
OLD, NEW = NOW - 40 * DAY, NOW - 2 * DAY  # against a 30-day retention


def age(path: Path, t: float) -> None:
    os.utime(path, (t, t), follow_symlinks=False)


def summary(d: Path, fixture: str, job_id: int, t: float, timeline: bool = False) -> Path:
    doc = json.loads((FX / f"{fixture}.summary.json").read_text())
    doc["job_id"] = job_id
    stem = f"piqc.{job_id}.0.vm.{int(doc['started'])}"
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{stem}.summary.json"
    path.write_text(json.dumps(doc))
    if timeline:
        tl = d / f"{stem}.timeline.jsonl"
        shutil.copy(FX / "4gpu-2idle.timeline.jsonl", tl)
        age(tl, t)
    age(path, t)
    return path


def tl(path: Path) -> Path:
    return path.with_name(path.name.replace(".summary.json", ".timeline.jsonl"))


@pytest.fixture
def site(tmp_path):
    """A node spool (outbox, delivered/) and a shared spool, some files taken in by the store."""
    url = f"sqlite:///{tmp_path}/store.db"
    engine = open_engine(url, mode="create")
    spool, shared = tmp_path / "spool", tmp_path / "shared"
    node = shared / "vm"
    f = {
        "shared_old_taken": summary(node, "4gpu-2idle", 1, OLD, timeline=True),
        "shared_new_taken": summary(node, "no-driver", 2, NEW),
        "shared_old_rewritten": summary(node, "monitor-off", 3, OLD),
    }
    replay(engine, [shared])  # the store takes in these three
    f["shared_old_rewritten"].write_text(json.dumps({**json.loads(f["shared_old_rewritten"].read_text()),
                                                     "user": "changed"}))
    age(f["shared_old_rewritten"], OLD)
    f["shared_old_not_taken"] = summary(node, "gpu-lost", 4, OLD)
    # the node: two summaries pushed for real (push moves them to delivered/), one that never was
    out = spool / "outbox"
    for job, when in ((5, OLD), (6, NEW)):
        p = summary(out, "4gpu-2idle", job, when, timeline=True)
        push(Spool(spool), p.name.removesuffix(".summary.json"), url, 3.0, 0.0)
        f[f"delivered_{'old' if when == OLD else 'new'}_pushed"] = spool / "delivered" / p.name
        age(spool / "delivered" / p.name, when)
    f["delivered_old_not_in_store"] = summary(spool / "delivered", "sampler-killed", 7, OLD)
    f["outbox_old_waiting"] = summary(out, "gpu-lost", 8, OLD)
    for name, when in (("marker_old_done", OLD), ("marker_new_done", NEW)):
        f[name] = out / f"piqc.{9 if 'old' in name else 10}.0.vm.1.reported"
        f[name].touch()
        age(f[name], when)
    f["marker_old_waiting"] = out / (f["outbox_old_waiting"].name.removesuffix(".summary.json") + ".reported")
    f["marker_old_waiting"].touch()
    age(f["marker_old_waiting"], OLD)
    for qdir in (node / "quarantine", out / "quarantine"):
        qdir.mkdir(mode=0o700)
        for name, when in (("old", OLD), ("new", NEW)):
            key = f"quarantine_{qdir.parent.name}_{name}"
            f[key] = qdir / f"piqc.{name}.summary.json"
            f[key].write_text("{broken")
            age(f[key], when)
            reason = qdir / f"piqc.{name}.summary.json.reason"
            reason.write_text("not JSON\n")
            age(reason, when)
            f[key + "_reason"] = reason
    engine.dispose()
    return url, spool, shared, f


REMOVED = {"shared_old_taken", "delivered_old_pushed", "marker_old_done", "quarantine_vm_old",
           "quarantine_vm_old_reason", "quarantine_outbox_old", "quarantine_outbox_old_reason"}


def run_prune(url: str, spool: Path, shared: Path, dry_run: bool = False):
    opened = []

    def open_store():
        opened.append(1)
        return open_engine(url, mode="read")

    res = prune(spool_dir=spool, shared_spool_dir=shared, older_than=30 * DAY, open_store=open_store,
                dry_run=dry_run, now=NOW)
    return res, opened


def test_prune_removes_old_taken_in_files_and_keeps_everything_else(site):
    url, spool, shared, f = site
    res, _ = run_prune(url, spool, shared)
    gone = {k for k, p in f.items() if not p.exists()}
    assert gone == REMOVED
    assert not tl(f["shared_old_taken"]).exists() and not tl(f["delivered_old_pushed"]).exists()
    assert tl(f["delivered_new_pushed"]).exists()
    assert sorted(res.removed) == sorted([str(f[k]) for k in REMOVED] + [str(tl(f["shared_old_taken"])),
                                                                          str(tl(f["delivered_old_pushed"]))])
    kept = dict(item.split(": ", 1) for item in res.kept)
    assert kept == {str(f["shared_old_rewritten"]): "not taken in by the store",
                    str(f["shared_old_not_taken"]): "not taken in by the store",
                    str(f["delivered_old_not_in_store"]): "not taken in by the store",
                    str(f["marker_old_waiting"]): "its summary is still waiting in the outbox"}
    # a second run finds nothing more to remove
    again, _ = run_prune(url, spool, shared)
    assert again.removed == [] and sorted(again.kept) == sorted(res.kept)


def test_dry_run_removes_nothing_and_lists_the_same(site):
    url, spool, shared, f = site
    before = sorted(str(p) for p in spool.rglob("*")) + sorted(str(p) for p in shared.rglob("*"))
    dry, _ = run_prune(url, spool, shared, dry_run=True)
    assert sorted(str(p) for p in spool.rglob("*")) + sorted(str(p) for p in shared.rglob("*")) == before
    real, _ = run_prune(url, spool, shared)
    assert sorted(dry.removed) == sorted(real.removed) and len(real.removed) == len(REMOVED) + 2


def test_the_store_is_not_opened_when_nothing_is_old_enough(tmp_path):
    node = tmp_path / "shared" / "vm"
    summary(node, "4gpu-2idle", 1, NEW)
    res, opened = run_prune(f"sqlite:///{tmp_path}/missing.db", tmp_path / "spool", tmp_path / "shared")
    assert opened == [] and res.removed == [] and res.recent == 1
    assert not (tmp_path / "missing.db").exists()


def test_symlinks_are_never_followed(site, tmp_path):
    url, spool, shared, f = site
    target = f["delivered_old_pushed"]
    moved = tmp_path / "elsewhere" / target.name
    moved.parent.mkdir()
    os.rename(target, moved)
    target.symlink_to(moved)  # an old, taken-in summary behind a symlink
    link_dir = shared / "linked"
    link_dir.symlink_to(shared / "vm", target_is_directory=True)
    res, _ = run_prune(url, spool, shared)
    assert moved.exists() and target.is_symlink()
    assert not any("linked" in p for p in res.removed)


def test_the_command(site, tmp_path):
    url, spool, shared, f = site
    for p in f.values():  # ages relative to now, for the command's own clock
        if p.exists() and not p.is_symlink():
            age(p, os.lstat(p).st_mtime - NOW + time.time())
    cfg = tmp_path / "piqc.toml"
    cfg.write_text(f'spool_dir = "{spool}"\nshared_spool_dir = "{shared}"\n[spool]\nretention_days = 0\n')
    base = [sys.executable, "-m", "piqc_slurm", "--config", str(cfg), "--db", url, "spool", "prune"]
    r = subprocess.run(base, capture_output=True, text=True)
    assert r.returncode == 0 and "nothing is pruned" in r.stdout and all(p.exists() for p in f.values())
    r = subprocess.run(base + ["--older-than", "30", "--dry-run"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert f"would remove {f['shared_old_taken']}" in r.stdout.splitlines()
    # 7 removed + 2 timelines; 4 kept as in the test above; newer: 1 shared, 1 delivered, 1 marker, 2 x 2 quarantined
    assert r.stdout.splitlines()[-1] == ("piqc-slurm spool prune: 9 file(s) to remove, 4 older than 30 day(s) "
                                         "kept, 7 newer kept (dry run: nothing deleted)")
    assert all(p.exists() for p in f.values())
    r = subprocess.run(base + ["--older-than", "30"], capture_output=True, text=True)
    assert r.returncode == 0 and f"removed {f['shared_old_taken']}" in r.stdout.splitlines()
    assert f"kept {f['shared_old_not_taken']}: not taken in by the store" in r.stdout.splitlines()
    assert {k for k, p in f.items() if not p.exists()} == REMOVED


def test_an_unreachable_store_is_one_line_and_deletes_no_summary(site, tmp_path):
    url, spool, shared, f = site
    for p in f.values():
        if p.exists():
            age(p, OLD - NOW + time.time())
    r = subprocess.run([sys.executable, "-m", "piqc_slurm", "--db", f"sqlite:///{tmp_path}/none.db", "--config",
                        str(_cfg(tmp_path, spool, shared)), "spool", "prune", "--older-than", "30"],
                       capture_output=True, text=True)
    assert r.returncode == 3 and r.stderr.startswith("piqc-slurm: ") and r.stderr.count("\n") == 1
    assert all(p.exists() for k, p in f.items() if "quarantine" not in k and "marker" not in k)


def _cfg(tmp_path: Path, spool: Path, shared: Path) -> Path:
    cfg = tmp_path / "piqc.toml"
    cfg.write_text(f'spool_dir = "{spool}"\nshared_spool_dir = "{shared}"\n')
    return cfg


def test_orphaned_run_dirs_go_once_old_and_only_if_their_summary_was_spooled(tmp_path):
    """A run that ended without an Epilog leaves spool/orphaned/<key>/ (the sampler spooled its
    summary into the outbox and wrote `spooled`): after the retention it goes; one without the
    marker is kept, said; a recent one stays."""
    spool = tmp_path / "spool"
    runs = {}
    for name, marker, t in (("old", True, OLD), ("unspooled", False, OLD), ("recent", True, NEW)):
        d = spool / "orphaned" / f"piqc.{name}.0.vm"
        d.mkdir(parents=True)
        (d / "checkpoint.json").write_text("{}")
        if marker:
            (d / "spooled").write_text(f"piqc.{name}.0.vm.1\n")
        for p in d.iterdir():
            age(p, t)
        age(d, t)
        runs[name] = d
    res = prune(spool_dir=spool, shared_spool_dir=None, older_than=30 * DAY, open_store=lambda: None, now=NOW)
    assert not runs["old"].exists()
    assert runs["unspooled"].is_dir() and runs["recent"].is_dir()
    assert sorted(res.removed) == sorted(str(runs["old"] / n) for n in ("checkpoint.json", "spooled"))
    assert res.kept == [f"{runs['unspooled']}: no summary was spooled from it"]
