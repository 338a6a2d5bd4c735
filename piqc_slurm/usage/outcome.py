"""How a job ended, for spend: completed, failed (spend that bought no result), or neither.

COMPLETED is the only success. Spend is failed when a job that started
ended any other way: FAILED, TIMEOUT, OUT_OF_MEMORY, CANCELLED after it
started (the user's side), NODE_FAIL, PREEMPTED, BOOT_FAIL, DEADLINE (the
site's side). A job that never started spent nothing. Running, pending and
REQUEUED records are neither (a requeued attempt is priced on its own
record, and the rerun's outcome decides the rest).
"""

from __future__ import annotations

USER_SIDE = frozenset({"FAILED", "TIMEOUT", "OUT_OF_MEMORY", "CANCELLED", "DEADLINE"})
SITE_SIDE = frozenset({"NODE_FAIL", "PREEMPTED", "BOOT_FAIL"})
NOT_ENDED = frozenset({"PENDING", "RUNNING", "SUSPENDED", "REQUEUED", "RESIZING", "REQUEUE_HOLD",
                       "REQUEUE_FED", "REVOKED", "SIGNALING", "STAGE_OUT", "STOPPED", "COMPLETING",
                       "CONFIGURING", "SPECIAL_EXIT", "RESV_DEL_HOLD"})


def base_state(state: str | None) -> str:
    """'CANCELLED by 1001' -> 'CANCELLED'; 'COMPLETED+' -> 'COMPLETED'."""
    return (state or "").split(" ", 1)[0].rstrip("+").upper()


def completed(state: str | None) -> bool:
    return base_state(state) == "COMPLETED"


def failed(state: str | None, started: bool = True) -> bool:
    """Spend that bought no result (started and did not complete)."""
    b = base_state(state)
    return started and (b in USER_SIDE or b in SITE_SIDE)


def side(state: str | None) -> str | None:
    """'user' or 'site' for a failed run's cause; None otherwise."""
    b = base_state(state)
    return "user" if b in USER_SIDE else "site" if b in SITE_SIDE else None
