"""Stores made by an older piqc-slurm are migrated forward when opened."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, inspect, text

from piqc_slurm.store import open_engine
from piqc_slurm.store.db import migrate

pytestmark = pytest.mark.unit


def test_a_0001_store_keeps_its_rows_and_gains_findings(tmp_path):
    url = f"sqlite:///{tmp_path}/old.db"
    old = create_engine(url)
    migrate(old, "0001")
    with old.begin() as c:
        c.execute(text("INSERT INTO jobs (cluster, job_id_raw, submit, job_id, name, user, account, partition, qos, "
                       "state, exit_code, derived_exit_code, elapsed, alloc_cpus, alloc_nodes, alloc_gpus, "
                       "alloc_tres, nodelist, work_dir, comment) VALUES ('c', 1, 100, '1', 'n', 'u', '', '', '', "
                       "'COMPLETED', '0:0', '', 10, 1, 1, 2, '', 'vm', '', '')"))
    assert "findings" not in inspect(old).get_table_names()
    old.dispose()
    new = open_engine(url)
    assert "findings" in inspect(new).get_table_names()
    with new.connect() as c:
        assert c.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0003"
        assert c.execute(text("SELECT count(*) FROM jobs")).scalar() == 1
    new.dispose()
