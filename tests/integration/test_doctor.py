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
    init = subprocess.run([sys.executable, "-m", "piqc_slurm", "db", "init"], capture_output=True, text=True,
                          env=cluster.root_env())  # the cluster's store (idempotent): doctor creates none
    assert init.returncode == 0, init.stderr
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


def test_doctor_names_gpu_types_the_catalog_does_not_know(cluster, tmp_path):
    from sqlalchemy.orm import Session

    from piqc_slurm.store import open_engine
    from piqc_slurm.store.models import Job

    url = f"sqlite:///{tmp_path}/store.db"
    engine = open_engine(url)

    def add(*types):
        with Session(engine) as s, s.begin():
            n = s.query(Job).count()
            for i, t in enumerate(types, n + 1):
                s.add(Job(cluster="piqc", job_id_raw=i, submit=i, job_id=str(i), gpu_type=t, alloc_gpus=1))

    add("h100", "a100")
    r = doctor(cluster, PIQC_DB=url)
    assert r.returncode == 0, r.stdout + r.stderr
    assert any(line.startswith("OK") and " gpu types " in line for line in r.stdout.splitlines()), r.stdout
    add("mi300x", "mi300x")
    r = doctor(cluster, PIQC_DB=url)
    engine.dispose()
    assert r.returncode == 0, r.stdout + r.stderr  # a warning, not a failure
    line = next(ln for ln in r.stdout.splitlines() if " gpu types " in ln)
    assert line.startswith("WARN") and "mi300x (2 jobs)" in line and "fallback" in line, r.stdout
    assert "fix: add each to [prices] in the config (`mi300x = <USD per GPU-hour>`)" in r.stdout
