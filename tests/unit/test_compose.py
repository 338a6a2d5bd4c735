"""The docker compose cluster is validated by the compose client (no engine runs here)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
DIR = Path(__file__).resolve().parents[2] / "docker-slurm"


def test_compose_file_is_valid():
    client = shutil.which("docker-compose")
    if client is None:
        pytest.skip("docker-compose not installed (docker-slurm/setup.sh installs it)")
    r = subprocess.run([client, "-f", "compose.yaml", "config", "-q"], cwd=DIR, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    services = subprocess.run([client, "-f", "compose.yaml", "config", "--services"], cwd=DIR,
                              capture_output=True, text=True, check=True).stdout.split()
    assert {"mariadb", "slurmdbd", "slurmctld", "c1", "c2"} <= set(services)
