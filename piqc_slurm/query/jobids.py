"""`-j/--jobs` values, as sacct 22.05.8 reads them (slurm_parse_step_str).

  1234        job 1234: the job whose raw id is 1234, every task of array
              1234, every component of het job 1234 (slurmdbd matches
              id_job, id_array_job and het_job_id)
  1234_5      task 5 of array 1234
  1234+1      component 1 of het job 1234
  1234.batch  a step (batch, extern, interactive or a number): without -X
              only that step's line; with -X its job's allocation line, as
              sacct -X shows it
  1234_[1-3,7] (extension: sacct 22.05 refuses it, "Bad job array element
              specified") tasks 1, 2, 3 and 7 of array 1234
An item must start with a digit."""

from __future__ import annotations

import re
from typing import NamedTuple

from piqc_slurm.errors import UsageError

_ITEM = re.compile(r"([0-9]+)(?:_([0-9]+|\[[0-9,\-]+\])|\+([0-9]+))?", re.ASCII)
_U32 = 0xFFFFFFFF


class JobSel(NamedTuple):
    job: int
    task: int | None = None   # array task id
    het: int | None = None    # het job offset
    step: str | None = None   # a step id (batch, extern, interactive, 0, 1 ...); None: the whole job

    def matches(self, job_id_raw: int, array_job_id: int | None, array_task_id: int | None,
                het_job_id: int | None, het_job_offset: int | None) -> bool:
        """Whether this selection names that job (slurmdbd's rule; see the module docstring)."""
        if self.task is not None:
            return array_job_id == self.job and array_task_id == self.task
        if self.het is not None:
            return het_job_id == self.job and het_job_offset == self.het
        return self.job in (job_id_raw, array_job_id, het_job_id)


def _split(text: str) -> list[str]:
    """Comma-split, keeping commas inside [...] (the array-range extension)."""
    out, depth, cur = [], 0, []
    for ch in text:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth = max(depth - 1, 0)
        if ch == "," and depth == 0:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return [s for s in out if s]


def _show(item: str) -> str:
    """The item as sacct names it in its message; quoted where it would break the one line."""
    return item if item.isprintable() else repr(item)


def _u32(digits: str, item: str) -> int:
    """An id or task number: at most 4294967295 (int() of 5,000 digits would be a ValueError)."""
    if len(digits.lstrip("0")) > 10 or int(digits) > _U32:
        raise UsageError(f"job id out of range: {_show(item)}")
    return int(digits)


def _range(spec: str, item: str) -> list[int]:
    tasks: list[int] = []
    for part in spec.strip("[]").split(","):
        lo, dash, hi = part.partition("-")
        if not (lo.isascii() and lo.isdigit()) or (dash and not (hi.isascii() and hi.isdigit())):
            raise UsageError(f"Bad job array element specified: {_show(item)}")
        a, b = _u32(lo, item), _u32(hi, item) if dash else _u32(lo, item)
        if b < a or b - a > 1_000_000:
            raise UsageError(f"Bad job array element specified: {_show(item)}")
        tasks.extend(range(a, b + 1))
    return tasks


def parse_jobs(values: list[str] | tuple[str, ...]) -> list[JobSel]:
    """-j values (comma lists, repeatable) -> selections, in order, without duplicates."""
    out: list[JobSel] = []
    seen: set[JobSel] = set()   # `1_[0-1000000]`: a list membership test per task would be quadratic
    for value in values:
        for item in _split(value):
            if not item[:1].isdigit() or not item.isascii():
                raise UsageError(f"Bad job/step specified: {_show(item)}")
            head, dot, step = item.partition(".")
            if dot and step not in ("batch", "extern", "interactive") and not step[:1].isdigit():
                raise UsageError(f"Bad step specified: {_show(item)}")
            if dot and step[:1].isdigit():
                step = str(int(re.match(r"[0-9]+", step).group(0)[:10]))  # sacct: atoi()
            m = _ITEM.fullmatch(head)
            if not m:
                if "_" in head:
                    raise UsageError(f"Bad job array element specified: {_show(item)}")
                if "+" in head:
                    raise UsageError(f"Bad hetjob offset specified: {_show(item)}")
                raise UsageError(f"Bad job/step specified: {_show(item)}")
            job = _u32(m.group(1), item)
            sels: list[JobSel]
            if m.group(2) is not None and m.group(2).startswith("["):
                sels = [JobSel(job, task=t) for t in _range(m.group(2), item)]
            elif m.group(2) is not None:
                sels = [JobSel(job, task=_u32(m.group(2), item))]
            elif m.group(3) is not None:
                sels = [JobSel(job, het=_u32(m.group(3), item))]
            else:
                sels = [JobSel(job)]
            if dot:
                sels = [s._replace(step=step) for s in sels]
            for s in sels:
                if s not in seen:
                    seen.add(s)
                    out.append(s)
    return out
