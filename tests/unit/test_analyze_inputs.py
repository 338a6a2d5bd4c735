"""The per-job GPU inputs (no pandas: the report, seff) equal the window's (pandas: analyze)."""

from __future__ import annotations

import math

import pytest

from piqc_slurm.analysis import _gpu_part
from piqc_slurm.analyze.inputs import gpu_inputs
from piqc_slurm.query.store import Reader
from piqc_slurm.store.db import open_engine

pytestmark = pytest.mark.unit

ROWS = [
    {"job_ref": 7, "samples": 3600, "seconds": 3600.0, "active_seconds": 3400.0, "util_mean": 81.0,
     "mem_used_max_mib": 30000, "mem_total_mib": 81559, "power_mean_w": 500.0, "power_limit_w": 700.0,
     "power_frac_mean": None, "sm_active_mean": 0.6, "tensor_active_mean": 0.3, "dram_active_mean": 0.4,
     "name": "NVIDIA H100 80GB HBM3"},
    {"job_ref": 7, "samples": 3600, "seconds": 3600.0, "active_seconds": 3000.0, "util_mean": 61.0,
     "mem_used_max_mib": 50000, "mem_total_mib": 81559, "power_mean_w": None, "power_limit_w": 700.0,
     "power_frac_mean": 0.5, "sm_active_mean": 0.4, "tensor_active_mean": 0.1, "dram_active_mean": 0.2,
     "name": "NVIDIA H100 80GB HBM3"},
    {"job_ref": 7, "samples": 3600, "seconds": 3600.0, "active_seconds": 0.0, "util_mean": 0.0,
     "mem_used_max_mib": 0, "mem_total_mib": 81559, "power_mean_w": 60.0, "power_limit_w": 700.0,
     "power_frac_mean": None, "sm_active_mean": 0.0, "tensor_active_mean": 0.0, "dram_active_mean": 0.0,
     "name": "NVIDIA H100 80GB HBM3"},
]


def test_by_hand_and_equal_to_the_window_form(tmp_path):
    one = gpu_inputs(ROWS, 0.05)
    # used: GPUs 0 and 1; util (81 + 61) / 2 = 71; power (500/700 + 0.5) / 2 = 0.607; sm (0.6 + 0.4) / 2 = 0.5
    assert (one["sampled_gpus"], one["used_gpus"], one["idle_gpus"]) == (3, 2, 1)
    assert one["util_used"] == 71.0 and one["sm_used"] == pytest.approx(0.5)
    assert one["power_used"] == pytest.approx((500 / 700 + 0.5) / 2)
    assert one["mem_peak_gib"] == pytest.approx(50000 / 1024)
    win = _through_the_store(tmp_path, ROWS).loc[7]
    for key, value in one.items():
        if key == "mig":
            assert bool(win[key]) == bool(value)
        elif math.isnan(value):
            assert math.isnan(win[key]), key
        else:
            assert float(win[key]) == pytest.approx(value), key


def _through_the_store(tmp_path, rows, name="NVIDIA H100 80GB HBM3"):
    """The window form of `rows` (all of job 7): stored as ingest stores them (a job ending at
    t=1000, one node summary, a gpu_usage row each) and read back as analyze reads a window."""
    url = f"sqlite:///{tmp_path}/store.db"
    engine = open_engine(url)
    with engine.begin() as c:
        c.exec_driver_sql(
            "INSERT INTO jobs (id, cluster, job_id_raw, submit, job_id, name, user, account, partition, qos, state, "
            "exit_code, derived_exit_code, elapsed, alloc_cpus, alloc_nodes, alloc_gpus, alloc_tres, nodelist, "
            "work_dir, comment, start, \"end\") VALUES (7, 'c', 7, 0, '7', 'j', 'u', 'a', 'gpu', 'normal', "
            "'COMPLETED', '0:0', '0:0', 1000, 8, 1, ?, '', 'n1', '/', '', 0, 1000)", (len(rows),))
        c.exec_driver_sql(
            "INSERT INTO node_summaries (id, cluster, job_id_raw, restart_count, node, started_at, user, monitor, "
            "partial, gpu_count, doc, job_ref) VALUES (1, 'c', 7, 0, 'n1', 0, 'u', 'on', 0, ?, '{}', 7)",
            (len(rows),))
        for k, r in enumerate(rows):
            c.exec_driver_sql(
                "INSERT INTO gpu_usage (summary_id, minor, name, lost, samples, seconds, active_seconds, util_mean, "
                "mem_used_max_mib, mem_total_mib, power_mean_w, power_limit_w, power_frac_mean, sm_active_mean, "
                "tensor_active_mean, dram_active_mean) VALUES (1, ?, ?, 0, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (k, r.get("name", name), r["samples"], r["seconds"], r["active_seconds"], r["util_mean"],
                 r["mem_used_max_mib"], r["mem_total_mib"], r["power_mean_w"], r["power_limit_w"],
                 r["power_frac_mean"], r["sm_active_mean"], r["tensor_active_mean"], r["dram_active_mean"]))
    engine.dispose()
    return _gpu_part(Reader, url, {"since": 0, "until": 2000}, 0.05)


def test_the_store_computes_power_over_the_limit_and_names_mig_slices(tmp_path):
    # older samplers kept no power_frac_mean: mean / limit (560 / 700 W = 0.8); a limit of 0 is unknown
    rows = [{**ROWS[0], "power_mean_w": 560.0, "power_limit_w": 700.0},
            {**ROWS[1], "power_frac_mean": None, "power_mean_w": 100.0, "power_limit_w": 0.0,
             "name": "NVIDIA A100-SXM4-40GB MIG 3g.20gb"}]
    win = _through_the_store(tmp_path, rows).loc[7]
    assert win["power_used"] == pytest.approx(0.8)   # the second GPU's power is unknown: the mean of one
    assert bool(win["mig"]) is True
    plain = _through_the_store(tmp_path / "b", ROWS[:1]).loc[7]
    assert bool(plain["mig"]) is False and plain["power_used"] == pytest.approx(500 / 700)
