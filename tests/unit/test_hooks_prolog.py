"""The Prolog writes the sampler's context without importing its decoder:
the two must agree."""

from __future__ import annotations

import pytest

from piqc_slurm import config
from piqc_slurm.hooks import prolog
from piqc_slurm.hooks.context import from_env
from piqc_slurm.sampler.context import CONTEXT_FORMAT, context_from_dict

pytestmark = pytest.mark.unit


def test_prolog_context_is_what_the_sampler_reads():
    assert prolog.CONTEXT_FORMAT == CONTEXT_FORMAT
    cfg = config.load(env={})
    ctx = from_env({"SLURM_JOB_ID": "42", "SLURMD_NODENAME": "vm", "SLURM_CLUSTER_NAME": "piqc",
                    "SLURM_JOB_GPUS": "0,3", "SLURM_JOB_UID": "1001", "SLURM_JOB_USER": "alice",
                    "SPANK_PIQC_GPU_MONITOR": "5"})
    doc = prolog.sampler_context(ctx, prolog.decide(ctx, cfg), cfg, 1795868000.0)
    parsed = context_from_dict(doc)
    assert (parsed.job_id, parsed.gpus, parsed.interval, parsed.uid) == (42, (0, 3), 5.0, 1001)


def test_prolog_path_imports_stay_light():
    import subprocess
    import sys

    code = ("import sys; import piqc_slurm.hooks.prolog, piqc_slurm.config, piqc_slurm.logsetup; "
            "piqc_slurm.logsetup.HookLog(); "
            "print(' '.join(m for m in ('dataclasses', 'logging', 'sqlalchemy', 'pandas', 'click', 'pynvml') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == [], f"the Prolog path imports {out}"
