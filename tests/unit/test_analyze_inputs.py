"""The per-job GPU inputs (no pandas: the report, seff) equal the window's (pandas: analyze)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from piqc_slurm.analysis import gpu_inputs as window_inputs
from piqc_slurm.analyze.inputs import gpu_inputs

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


def test_by_hand_and_equal_to_the_window_form():
    one = gpu_inputs(ROWS, 0.05)
    # used: GPUs 0 and 1; util (81 + 61) / 2 = 71; power (500/700 + 0.5) / 2 = 0.607; sm (0.6 + 0.4) / 2 = 0.5
    assert (one["sampled_gpus"], one["used_gpus"], one["idle_gpus"]) == (3, 2, 1)
    assert one["util_used"] == 71.0 and one["sm_used"] == pytest.approx(0.5)
    assert one["power_used"] == pytest.approx((500 / 700 + 0.5) / 2)
    assert one["mem_peak_gib"] == pytest.approx(50000 / 1024)
    win = window_inputs(pd.DataFrame.from_records(ROWS), 0.05).loc[7]
    for key, value in one.items():
        if key == "mig":
            assert bool(win[key]) == bool(value)
        elif math.isnan(value):
            assert math.isnan(win[key]), key
        else:
            assert float(win[key]) == pytest.approx(value), key
