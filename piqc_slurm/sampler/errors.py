"""Typed errors of the sampler.

They sit on the project's PiqcError tree (piqc_slurm.errors, stdlib only) so
that the CLI's one error-to-exit-code mapping covers them too, and so that a
caller can tell "the payload is bad" from "NVML is not there" without string
matching.
"""

from __future__ import annotations

from piqc_slurm.errors import PiqcError, SpoolFormatError


class NvmlUnavailable(PiqcError):
    """NVML cannot be used on this node at all (no library, no driver, init failed).

    Monitoring is then off for the job, not failed: the sampler records the
    reason in its checkpoint and exits 0, so the Epilog and the analysis can
    say why there is no GPU data.
    """

    exit_code = 6

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(f"NVML unavailable: {reason}")


class CheckpointError(SpoolFormatError):
    """A checkpoint file is unreadable, malformed, or of an unknown format version.

    Carries the path so that a reader can leave the file in place (a newer
    sampler may have written it) and name it in its message.
    """

    def __init__(self, message: str, *, path: str = ""):
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)


class ContextError(PiqcError):
    """The sampler's context.json (written by the Prolog) is missing or invalid."""

    exit_code = 2

    def __init__(self, message: str, *, path: str = ""):
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)
