"""GPM evidence on the real cluster: the sampler, started by the Prolog, reads
the fake GPU's GPM metrics through the real pynvml (nvmlGpmSampleGet /
nvmlGpmMetricsGet) and the Epilog's summary carries them per device, with
mean power against the power limit. The cluster's GPU type decides whether
GPM exists (H100/H200 names in the fake driver); on any other type the
summary must carry no GPM keys at all, never zeros.
"""

from __future__ import annotations

import json
import re

import pytest

pytestmark = pytest.mark.slurm

GPM_KEYS = tuple(f"{m}_{s}" for m in ("sm_active", "sm_occupancy", "tensor_active", "dram_active")
                 for s in ("mean", "p95"))
LOAD = [{"gpus": [0], "util": 90, "mem_gib": 10, "power_frac": 0.25, "sm_active": 0.2,
         "tensor_active": 0.05}]


def has_gpm(name: str | None) -> bool:
    # the fake driver's rule (docker-slurm/FAKE-GPU.md): H100 or H200, not followed by a letter or digit
    return bool(name and re.search(r"H100(?![A-Za-z0-9])|H200(?![A-Za-z0-9])", name, re.IGNORECASE))


def test_gpm_and_power_fraction_in_the_summary(cluster):
    job = cluster.submit(f"fakegpu-work --seconds 20 --load '{json.dumps(LOAD)}'", "--gres=gpu:1",
                         "-o", "/dev/null", name="t-gpm")
    assert cluster.wait(job, timeout=120) == "COMPLETED"
    s = cluster.wait_summary(job)
    assert s["nvml"]["ok"] and not s["partial"], s
    assert cluster.wait_hook("epilog", job).endswith("rc=0 exit=0")
    d, = s["devices"]
    assert d["samples"] >= 15, d
    # power_frac is the share of the limit whatever the GPU type; the sampler
    # also sees a second or two of idle (60 W) around the workload, so the mean
    # sits a little below the load's 0.25
    limit = d["power_limit_w"]
    assert limit and d["power_max_w"] == pytest.approx(0.25 * limit, abs=0.01), d
    assert d["power_frac_mean"] == pytest.approx(d["power_mean_w"] / limit, abs=0.001), d
    assert 0.2 <= d["power_frac_mean"] <= 0.25, d
    if has_gpm(d["name"]):
        assert d["sm_active_mean"] == pytest.approx(0.2, abs=0.005), d
        assert d["tensor_active_mean"] == pytest.approx(0.05, abs=0.005), d
        assert d["sm_active_p95"] == pytest.approx(0.2, abs=0.005), d
        assert d["tensor_active_p95"] == pytest.approx(0.05, abs=0.005), d
        # not in the load (dram_active) or not modelled by the fake (SM_OCCUPANCY): absent, not 0
        for key in ("dram_active_mean", "dram_active_p95", "sm_occupancy_mean", "sm_occupancy_p95"):
            assert key not in d, (key, d)
    else:
        assert not [k for k in GPM_KEYS if k in d], d
