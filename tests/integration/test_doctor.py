"""`piqc-slurm doctor` on the real cluster, and on a broken copy of its slurm.conf."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.slurm


def doctor(cluster, **env):
    return subprocess.run([sys.executable, "-m", "piqc_slurm", "doctor"], capture_output=True, text=True,
                          env=cluster.root_env(**env))


def test_doctor_all_ok_on_the_test_cluster(cluster):
    r = doctor(cluster)
    assert r.returncode == 0, r.stdout + r.stderr
    for name in ("nvml", "spool", "hooks", "spank", "store", "sacct"):
        assert any(line.startswith("OK") and f" {name} " in line for line in r.stdout.splitlines()), name
    assert "8 GPU(s) NVIDIA H100 80GB HBM3" in r.stdout


def test_doctor_says_what_to_fix(cluster, tmp_path):
    conf = (cluster.dir / "etc" / "slurm.conf").read_text()
    broken = tmp_path / "slurm.conf"
    broken.write_text(conf.replace("PrologFlags=", "#PrologFlags=").replace("Epilog=", "#Epilog="))
    r = doctor(cluster, SLURM_CONF=str(broken), PIQC_DB="postgresql+psycopg://x@127.0.0.1:1/none",
               FAKENVML_FAULT="driver_not_loaded")
    assert r.returncode == 1
    out = r.stdout
    assert "PrologFlags=(unset) lacks Alloc" in out and "fix: add PrologFlags=Alloc" in out
    assert "Epilog= is not set" in out
    assert "FAIL  store" in out and "WARN  nvml" in out
