"""`piqc-slurm doctor`'s node checks on real temp files: the hooks' entry point (PIQC_BIN, read
as the installed fragment epilog/piqc-hook.sh reads it), the outbox count against what the store
already took in, a bad SLURM_CONF said at once, sacct's timeout, and an ordinary user meeting
root-only files (a WARN, never a traceback). The store checks are tested elsewhere."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from piqc_slurm.doctor import FAIL, OK, WARN, check_hooks, check_sacct, check_spool, hook_entry_point

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
FRAGMENT = REPO / "epilog" / "piqc-hook.sh"
SUMMARIES = REPO / "tests" / "fixtures" / "summaries"
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (root-owned spool, acting as nobody)")


class Node:
    """A slurm.conf naming prolog.d/* and epilog.d/*, the piqc fragment installed in both the way
    docker-slurm/cluster.sh does it (its PIQC_HOOK_ENV line pointed at our defaults file)."""

    def __init__(self, top: Path):
        self.top = top
        self.env_file = top / "default-piqc-slurm"
        self.exe = top / "venv" / "bin" / "piqc-slurm"
        self.conf = top / "slurm.conf"
        self.conf.write_text(f"ClusterName=t\nPrologFlags=Alloc,Contain\nProlog={top}/prolog.d/*\n"
                             f"Epilog={top}/epilog.d/*   # the site's hooks\n")
        text = FRAGMENT.read_text()
        assert "\nPIQC_HOOK_ENV=/etc/default/piqc-slurm\n" in text    # what this test rewires
        text = text.replace("\nPIQC_HOOK_ENV=/etc/default/piqc-slurm\n", f"\nPIQC_HOOK_ENV={self.env_file}\n")
        self.fragments = []
        for hook in ("prolog", "epilog"):
            (top / f"{hook}.d").mkdir()
            (top / f"{hook}.d" / "10-site.sh").write_text("#!/bin/sh\nexit 0\n")
            frag = top / f"{hook}.d" / "50-piqc.sh"
            frag.write_text(text)
            frag.chmod(0o755)
            self.fragments.append(frag)

    def checks(self, name: str) -> list:
        return [c for c in check_hooks(str(self.conf)) if c.name == name]

    def shell_piqc_bin(self) -> str:
        """PIQC_BIN as the fragment itself ends up with it: its own lines up to the sourcing, by sh."""
        text = self.fragments[0].read_text()
        head = text[:text.index('case "${SLURM_SCRIPT_CONTEXT')]
        r = subprocess.run(["sh", "-c", head + '\nprintf %s "$PIQC_BIN"'], capture_output=True, text=True,
                           check=True, timeout=10)
        return r.stdout


@pytest.fixture
def node(tmp_path: Path) -> Node:
    return Node(tmp_path)


def test_hook_entry_point_missing_not_executable_then_ok(node: Node) -> None:
    node.env_file.write_text(f"# site settings\nexport PIQC_CONFIG=/etc/piqc/piqc.toml\nexport PIQC_BIN={node.exe}\n")
    assert node.shell_piqc_bin() == str(node.exe)

    [c] = node.checks("hook bin")                     # prolog and epilog call the same one: one line
    assert c.status == FAIL and f"PIQC_BIN={node.exe} (set in {node.env_file}) does not exist" in c.what
    assert "every job's Prolog and Epilog do nothing" in c.what
    assert f"python3 -m venv {node.top / 'venv'}" in c.fix and f"set PIQC_BIN in {node.env_file}" in c.fix

    node.exe.parent.mkdir(parents=True)
    node.exe.write_text("#!/bin/sh\nexit 0\n")
    node.exe.chmod(0o644)
    [c] = node.checks("hook bin")
    assert c.status == FAIL and "is not executable" in c.what and c.fix.startswith(f"chmod 755 {node.exe}")

    node.exe.chmod(0o755)
    [c] = node.checks("hook bin")
    assert c.status == OK and c.what == f"PIQC_BIN={node.exe} (set in {node.env_file}) is executable"
    assert [x.status for x in node.checks("hooks")] == [OK, OK]


def test_hook_entry_point_read_as_sh_reads_it(node: Node) -> None:
    # quoting, ${VAR} of an earlier line, a later line winning, a comment after the value
    node.exe.parent.mkdir(parents=True)
    node.exe.write_text("#!/bin/sh\n")
    node.exe.chmod(0o755)
    node.env_file.write_text(f"PIQC_ROOT={node.top}\nexport PIQC_BIN=/nowhere/piqc-slurm\n"
                             'export PIQC_BIN="${PIQC_ROOT}/venv/bin/piqc-slurm"  # the venv\n')
    exe, source, env_file = hook_entry_point(str(node.fragments[1]))
    assert exe == node.shell_piqc_bin() == str(node.exe)
    assert (source, env_file) == (f"set in {node.env_file}", str(node.env_file))
    assert node.checks("hook bin")[0].status == OK


@pytest.mark.parametrize("defaults_file", ["absent", "without PIQC_BIN"])
def test_hook_entry_point_defaults_to_the_fragments_own(node: Node, defaults_file: str) -> None:
    if defaults_file != "absent":
        node.env_file.write_text("export PIQC_TIMEOUT=20\n")
    expected = node.shell_piqc_bin()
    assert expected == "/opt/piqc/venv/bin/piqc-slurm"
    exe, source, _ = hook_entry_point(str(node.fragments[0]))
    assert exe == expected
    assert source == (f"the fragment's default; no {node.env_file}" if defaults_file == "absent"
                      else f"the fragment's default; {node.env_file} does not set it")
    if not os.path.exists(expected):
        [c] = node.checks("hook bin")
        assert c.status == FAIL and f"PIQC_BIN={expected} ({source}) does not exist" in c.what


# ---- the outbox: what is waiting, and what the store already has ----

@pytest.fixture
def spool(tmp_path: Path) -> Path:
    if os.geteuid() != 0:
        pytest.skip("check_spool wants a root-owned spool")
    root = tmp_path / "spool"
    (root / "outbox").mkdir(parents=True)
    root.chmod(0o700)
    for name in ("4gpu-2idle.summary.json", "4gpu-2idle.timeline.jsonl", "gpu-lost.summary.json"):
        shutil.copy(SUMMARIES / name, root / "outbox" / f"piqc.{name}")
    (root / "outbox" / "piqc.4gpu-2idle.reported").touch()     # markers are not summaries
    return root


def spool_line(spool: Path, db: str = "") -> str:
    [c] = check_spool(str(spool), "spool-only", "", db)
    assert c.status == OK and c.name == "spool"
    return c.what


def test_outbox_summaries_the_store_took_in_are_not_waiting(spool: Path, tmp_path: Path) -> None:
    from piqc_slurm.spoolreplay import replay
    from piqc_slurm.store.db import open_engine

    assert spool_line(spool).endswith("2 summaries in outbox (not checked against the store: no store configured)")
    db = f"sqlite:///{tmp_path}/store.db"
    engine = open_engine(db, mode="create")
    try:
        res = replay(engine, [spool / "outbox"])           # ingest --spool: takes both in, moves nothing
        assert res.taken == 2
    finally:
        engine.dispose()
    assert len(list((spool / "outbox").glob("*.summary.json"))) == 2
    assert spool_line(spool, db).endswith("0 summaries waiting in outbox (2 more already in the store, "
                                          "left in place after ingest)")
    # a new summary waits; one rewritten since (same name, new content) waits again
    shutil.copy(SUMMARIES / "sampler-killed.summary.json", spool / "outbox" / "piqc.sampler-killed.summary.json")
    lost = spool / "outbox" / "piqc.gpu-lost.summary.json"
    lost.write_text(json.dumps({**json.loads(lost.read_text()), "partial": True}))
    assert spool_line(spool, db).endswith("2 summaries waiting in outbox (1 more already in the store, "
                                          "left in place after ingest)")
    for p in (spool / "outbox").glob("*.summary.json"):
        p.unlink()
    assert spool_line(spool, db).endswith("0 summaries waiting in outbox")


def test_outbox_with_an_unreachable_store_still_counts(spool: Path, tmp_path: Path) -> None:
    line = spool_line(spool, f"sqlite:///{tmp_path}/none/store.db")
    assert "2 summaries in outbox (not checked against the store: " in line


# ---- SLURM_CONF and sacct ----

@pytest.fixture
def fake_sacct(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A `sacct` first on PATH that records being run and then hangs."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    ran = tmp_path / "sacct-ran"
    (bin_dir / "sacct").write_text(f"#!/bin/sh\ntouch {ran}\nexec sleep 30\n")
    (bin_dir / "sacct").chmod(0o755)
    yield bin_dir, ran


def test_a_bad_slurm_conf_is_said_at_once(tmp_path: Path, fake_sacct: tuple[Path, Path]) -> None:
    bin_dir, ran = fake_sacct
    cfg = tmp_path / "piqc.toml"
    cfg.write_text(f'spool_dir = "{tmp_path}/spool"\ndelivery = "spool-only"\n')
    env = {**os.environ, "SLURM_CONF": "/nonexistent/slurm.conf", "PIQC_CONFIG": str(cfg),
           "PIQC_DB": f"sqlite:///{tmp_path}/store.db", "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}",
           "PYTHONPATH": str(REPO)}
    env.pop("FAKENVML_CONFIG", None)
    t = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "piqc_slurm", "doctor"], capture_output=True, text=True,
                       env=env, timeout=60)
    took = time.monotonic() - t
    assert r.returncode == 1, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert any(ln.startswith("FAIL") and " slurm.conf " in ln and ln.endswith(
        "SLURM_CONF=/nonexistent/slurm.conf: no such file") for ln in lines), r.stdout
    assert "fix: point SLURM_CONF at the cluster's slurm.conf, or unset it" in r.stdout
    for name in ("hooks", "spank", "sacct"):
        line = next(ln for ln in lines if f" {name} " in ln)
        assert line.startswith("WARN") and "skipped: needs the slurm.conf above" in line, line
    assert not ran.exists()                 # sacct was never asked to wait for a controller
    assert "slurmdbd" not in r.stdout
    assert took < 15, f"doctor took {took:.1f}s"


def test_sacct_that_does_not_answer_names_slurmdbd(tmp_path: Path, fake_sacct: tuple[Path, Path],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir, ran = fake_sacct
    conf = tmp_path / "slurm.conf"
    conf.write_text("AccountingStorageType=accounting_storage/slurmdbd\nAccountingStorageHost=dbd01\n"
                    "AccountingStoragePort=7031\n")
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ.get('PATH', '')}")
    t = time.monotonic()
    c = check_sacct(0.5, str(conf))
    assert time.monotonic() - t < 5 and ran.exists()
    assert c.status == FAIL
    assert c.what == ("sacct gave no answer within 0.5s; it asks slurmdbd at dbd01:7031 "
                      f"(AccountingStorageHost in {conf})")
    assert "is slurmdbd running and reachable" in c.fix


# ---- an ordinary user ----

@root_only
def test_an_ordinary_user_gets_warnings_not_a_traceback() -> None:
    # nobody must be able to reach the files' directories (pytest's tmp dirs are root-only)
    top = Path(tempfile.mkdtemp(prefix="piqc-doctor-"))
    try:
        top.chmod(0o755)
        node = Node(top)
        node.env_file.write_text(f"export PIQC_BIN={node.exe}\n")
        node.env_file.chmod(0o600)                       # root-only, as a site may keep it
        plugstack = top / "plugstack.conf"
        plugstack.write_text("optional /usr/lib/slurm/piqc.so\n")
        plugstack.chmod(0o600)
        spool = top / "spool"
        (spool / "outbox").mkdir(parents=True)
        spool.chmod(0o700)
        shutil.copy(SUMMARIES / "gpu-lost.summary.json", spool / "outbox" / "piqc.x.summary.json")
        cfg = top / "piqc.toml"
        shared = top / "shared"
        shared.mkdir(mode=0o700)                         # root's, as the Epilog makes it
        cfg.write_text(f'spool_dir = "{spool}"\ndelivery = "shared-spool"\nshared_spool_dir = "{shared}"\n'
                       f'db = "sqlite:///{top}/none.db"\n')
        cfg.chmod(0o644)
        env = {"PATH": "/nonexistent", "HOME": "/nonexistent", "PYTHONPATH": str(REPO), "SLURM_CONF": str(node.conf),
               "PIQC_CONFIG": str(cfg), "LANG": "C.UTF-8"}
        r = subprocess.run([sys.executable, "-m", "piqc_slurm", "doctor"], capture_output=True, text=True,
                           env=env, timeout=60, user=65534, group=65534, extra_groups=[])
        assert "Traceback" not in r.stderr, r.stderr
        lines = r.stdout.splitlines()
        spool_line = next(ln for ln in lines if " spool " in ln)
        assert spool_line.startswith("WARN") and "its outbox: cannot read (run as root)" in spool_line, r.stdout
        bin_line = next(ln for ln in lines if " hook bin " in ln)
        assert bin_line.startswith("WARN") and f"{node.env_file}: cannot read (run as root)" in bin_line, r.stdout
        spank_line = next(ln for ln in lines if " spank " in ln)
        assert spank_line.startswith("WARN") and f"{plugstack}: cannot read (run as root)" in spank_line
        shared_line = next(ln for ln in lines if " shared-spool " in ln)
        assert shared_line.startswith("WARN") and f"{shared}: cannot read (run as root)" in shared_line
        assert "fix: run piqc-slurm doctor as root" in r.stdout
        assert any(ln.startswith("FAIL") and " sacct " in ln and "not found" in ln for ln in lines)
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_lost_and_quarantined_summaries_are_warned_of(spool: Path) -> None:
    """What the Epilog counted lost (lost.count) and set aside (outbox/quarantine/) is said, not
    left in a file nobody reads."""
    assert [c.status for c in check_spool(str(spool), "spool-only", "")] == [OK]
    (spool / "lost.count").write_text("3\n")
    (spool / "outbox" / "quarantine").mkdir(mode=0o700)
    (spool / "outbox" / "quarantine" / "piqc.9.0.vm.1.summary.json").write_text("{not json")
    (spool / "outbox" / "quarantine" / "piqc.9.0.vm.1.summary.json.reason").write_text("not JSON\n")
    checks = check_spool(str(spool), "spool-only", "")
    assert [c.status for c in checks] == [OK, WARN, WARN]
    assert checks[1].what.startswith("3 summaries lost")
    assert checks[2].what.endswith("quarantine (first: piqc.9.0.vm.1.summary.json)")
    assert checks[2].what.startswith("1 summary in ")
