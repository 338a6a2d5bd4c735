"""The per-job GPU sampler: NVML adapter, streaming aggregation, run-dir files.

Importing the package is cheap (no pynvml, pandas, SQLAlchemy or click), so
the Epilog and ingest can read checkpoints with it; pynvml is imported only
by `piqc_slurm.sampler.nvml`, which the sampler process loads.
"""

from piqc_slurm.sampler.aggregate import GpuAggregate, Sample, TimelineBinner
from piqc_slurm.sampler.checkpoint import (
    CHECKPOINT_FORMAT,
    aggregates,
    load_checkpoint,
    read_timeline,
    sampler_pid,
)
from piqc_slurm.sampler.context import CONTEXT_FORMAT, Context, context_from_dict, load_context
from piqc_slurm.sampler.errors import CheckpointError, ContextError, NvmlUnavailable

__all__ = [
    "CHECKPOINT_FORMAT", "CONTEXT_FORMAT", "CheckpointError", "Context", "ContextError",
    "GpuAggregate", "NvmlUnavailable", "Sample", "TimelineBinner", "aggregates",
    "context_from_dict", "load_checkpoint", "load_context", "read_timeline", "sampler_pid",
]
