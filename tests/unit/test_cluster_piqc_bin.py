"""docker-slurm/cluster.sh refuses `up` when the entry point it wires into the hooks (PIQC_BIN)
is missing or not executable: the hook fragment would skip it silently for every job. The
script itself starts daemons, so only its check_piqc_bin function is run here, taken out of it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

CLUSTER_SH = Path(__file__).resolve().parents[2] / "docker-slurm" / "cluster.sh"


def function_text() -> str:
    m = re.search(r"^check_piqc_bin\(\) \{\n.*?^\}\n", CLUSTER_SH.read_text(), re.S | re.M)
    assert m, "check_piqc_bin() not found in cluster.sh"
    return m.group(0)


def check(piqc_bin: str) -> subprocess.CompletedProcess[str]:
    script = f'REPO=/the/repo\nPIQC_BIN="$1"\n{function_text()}check_piqc_bin\n'
    return subprocess.run(["bash", "-c", script, "bash", piqc_bin], capture_output=True, text=True, timeout=10)


def test_up_checks_piqc_bin_before_anything_else() -> None:
    text = CLUSTER_SH.read_text()
    body = text[text.index("cmd_up() {"):]
    lines = [ln.strip() for ln in body.splitlines()[1:5]]
    assert lines[:3] == ["need_root", "local t0=$SECONDS", "check_piqc_bin || exit 1"]
    assert subprocess.run(["bash", "-n", str(CLUSTER_SH)], capture_output=True, timeout=10).returncode == 0


def test_missing_not_executable_and_relative_are_refused(tmp_path: Path) -> None:
    r = check(str(tmp_path / "venv" / "bin" / "piqc-slurm"))
    assert r.returncode == 1
    assert f"PIQC_BIN={tmp_path}/venv/bin/piqc-slurm is missing or not executable" in r.stderr
    assert "bash docker-slurm/setup.sh" in r.stderr and "/the/repo/.venv" in r.stderr
    plain = tmp_path / "piqc-slurm"
    plain.write_text("#!/bin/sh\n")
    plain.chmod(0o644)
    assert check(str(plain)).returncode == 1
    assert check(str(tmp_path)).returncode == 1                 # a directory is not an entry point
    r = check("venv/bin/piqc-slurm")
    assert r.returncode == 1 and "not an absolute path" in r.stderr


def test_an_executable_entry_point_passes(tmp_path: Path) -> None:
    exe = tmp_path / "piqc-slurm"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    r = check(str(exe))
    assert (r.returncode, r.stderr) == (0, "")
