"""Shared fixtures. The `cluster` fixture brings the real local Slurm up once
per session (reusing one already running) and never tears it down: a second
`cluster.sh up` costs well under a second, and developers keep theirs."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from hypothesis import settings

# No per-example deadline: a busy 2-core CI machine must not turn a slow example into a failure.
settings.register_profile("piqc", deadline=None)
settings.load_profile("piqc")

sys.path.insert(0, str(Path(__file__).resolve().parent))

from slurmtest import Cluster, cluster_up  # noqa: E402

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def pytest_collection_modifyitems(config, items):
    for item in items:
        needs_services = "cluster" in getattr(item, "fixturenames", ())
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("store_url") == "postgresql":
            needs_services = True  # a real PostgreSQL server, started as root
        if needs_services and not item.get_closest_marker("slurm"):
            item.add_marker(pytest.mark.slurm)


@pytest.fixture(scope="session")
def cluster() -> Cluster:
    if os.geteuid() != 0:
        pytest.skip("the real-Slurm tests need root (cluster.sh starts daemons and creates device nodes)")
    return cluster_up()


@pytest.fixture
def utc(monkeypatch):
    """Run in TZ=UTC (sacct prints local time: recorded outputs were taken in UTC)."""
    import time

    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """With PIQC_REQUIRE_SLURM=1 (CI), a skipped real-cluster test is a failure; but for one that
    compares with a tool no package provides (marker outside_tool: Slurm's own seff script)."""
    outcome = yield
    report = outcome.get_result()
    if (report.skipped and os.environ.get("PIQC_REQUIRE_SLURM") == "1"
            and item.get_closest_marker("slurm") and not item.get_closest_marker("outside_tool")):
        report.outcome = "failed"
        report.longrepr = f"real-Slurm test skipped but PIQC_REQUIRE_SLURM=1: {report.longrepr}"


pytest_plugins = ("pg",)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    """A fresh, empty store on each backend: SQLite in tmp_path, and a new
    database on the real local PostgreSQL (docker-slurm/postgres.sh; root)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/store.db"
        return
    if os.geteuid() != 0:
        pytest.skip("PostgreSQL store tests need root (postgres.sh starts the server)")
    from pg import fresh_database

    with fresh_database("piqc_store") as url:
        yield url
