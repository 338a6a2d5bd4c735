"""What the sampler does when a live rule fires (sampler/watch.py): one syslog line in a stable
format for log shippers, and a notice appended to the job's own output file as the job's user.

The syslog line (docs/configuration.md, [watch]):

    piqc-slurm watch job=1234 user=alice rule=IDLE_GPUS since=2026-12-04T01:44:05Z usd=12.34 gpus=0,1

Values never hold blanks or `=`: anything outside [A-Za-z0-9._,:@+-] is written as `_`, so a
user-controlled string cannot forge a field. The notice goes through hooks.userreport, the
end-of-job report's writer: a child that drops to the user's uid/gid opens the file O_APPEND |
O_NOFOLLOW without creating it, only a regular file, within a deadline; root never opens it.

Dollars come from usage.cost.job_cost (the one definition) with the config's prices and the
catalog as the Prolog passed them (`watch.prices`); the store's price overrides are not on the
node, so a site that sets prices only in the store sees the catalog's here.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from piqc_slurm.sampler.watch import Event, WatchSettings

log = logging.getLogger("piqc-slurm.sampler")

_UNSAFE = re.compile(r"[^A-Za-z0-9._,:@+-]")
_USER = re.compile(r"[A-Za-z0-9._][A-Za-z0-9._@-]{0,63}")  # a mail recipient that is no option

FIXES = {
    "IDLE_GPUS": "if the job is stuck or done, end it (scancel {job}); if it waits for input or a "
                 "dependency, run that part without GPUs.",
    "IDLE_GPU": "ask for fewer GPUs next time (--gres=gpu:{used}), or make the code use all of them "
                "(torchrun --nproc-per-node, DDP, or CUDA_VISIBLE_DEVICES per task).",
    "UNDER_BATCHED": "raise the batch size (or the number of data loader workers) until the GPU is "
                     "busy; the same work then takes less GPU time.",
}


def safe(v: object) -> str:
    text = _UNSAFE.sub("_", str(v))
    return text[:120] or "-"


def iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def syslog_line(job_id: int, user: str, ev: Event, usd: float | None) -> str:
    money = "-" if usd is None else f"{usd:.2f}"
    gpus = ",".join(str(g) for g in ev.gpus) or "-"
    return (f"piqc-slurm watch job={job_id} user={safe(user)} rule={safe(ev.rule)} since={iso(ev.since)} "
            f"usd={money} gpus={gpus}")


def notice_text(job_id: int, ev: Event, usd: float | None, n_gpus: int) -> str:
    """The block appended to the job's output file."""
    money = "unknown (no price for this GPU type)" if usd is None else f"${usd:,.2f}"
    rule = ev.rule.split(":", 1)[-1]
    if ev.rule.startswith("recovered:"):
        return (f"\n[piqc-slurm {iso(ev.at)}] {rule} is over: the GPUs work again "
                f"(idle since {iso(ev.since)}). Spent so far: {money}.\n")
    used = max(n_gpus - len(ev.gpus), 1)
    fix = FIXES.get(rule, "").format(job=job_id, used=used)
    return (f"\n[piqc-slurm {iso(ev.at)}] {rule} on GPU{'s' if len(ev.gpus) != 1 else ''} "
            f"{','.join(map(str, ev.gpus))} since {iso(ev.since)}: {ev.evidence}.\n"
            f"  Spent so far on this job: {money} (the nightly report will name this {ev.nightly}).\n"
            f"  Fix: {fix}\n")


class OnCall:
    """Acts on the watch's events for one job: prices, logs, notifies."""

    def __init__(self, settings: WatchSettings, *, job_id: int, user: str, started: float, run_dir: Path,
                 job: Mapping[str, Any] | None, gpu_names: Sequence[str | None]) -> None:
        self.s, self.job_id, self.user, self.started, self.run_dir = settings, job_id, user, started, run_dir
        self.job = dict(job or {})
        self.n_gpus = len(gpu_names)
        self._cost = _pricer(settings, gpu_names, self.job.get("partition") or "")

    def usd(self, now: float) -> float | None:
        return None if self._cost is None else self._cost(max(now - self.started, 0.0))

    def act(self, ev: Event) -> dict[str, Any]:
        """Log and notify; returns the record kept in the checkpoint (and the summary)."""
        usd = self.usd(ev.at)
        line = syslog_line(self.job_id, self.user, ev, usd)
        log.warning("%s", line)
        notice = "off"
        if self.s.notices:
            notice = self._notify(notice_text(self.job_id, ev, usd, self.n_gpus))
            if notice != "ok":
                log.info("job %d: watch notice not written: %s", self.job_id, notice)
        action = "recovered" if ev.rule.startswith("recovered:") else "notice"
        return {**ev.to_dict(), "action": action, "usd": None if usd is None else round(usd, 2), "notice": notice}

    def policy(self, step: str, rule: str, since: float, lead: float, now: float) -> dict[str, Any]:
        """A step of the cancel policy (Watch.due): a warning, or the cancel (a dry run logs it only).
        The reason reaches the user in a notice and in sacct's AdminComment (set before scancel)."""
        usd = self.usd(now)
        base = syslog_line(self.job_id, self.user, Event(rule, now, since, (), ""), usd).rsplit(" gpus=", 1)[0]
        cancel_at = since + self.s.cancel_after_minutes * 60.0
        dry = self.s.cancel_dry_run
        record: dict[str, Any] = {"rule": rule, "at": round(now, 3), "since": round(since, 3),
                                  "usd": None if usd is None else round(usd, 2)}
        if step == "warn":
            record["action"] = "dry-run-warn" if dry else "warn"
            log.warning("%s action=%s cancel_at=%s", base, record["action"], iso(cancel_at))
            if not dry and self.s.notices:
                record["notice"] = self._notify(
                    f"\n[piqc-slurm {iso(now)}] WARNING: this job will be cancelled at {iso(cancel_at)} "
                    f"(in {lead:g} min) unless its GPUs start working: {rule} since {iso(since)}.\n")
            return record
        reason = (f"piqc-slurm: cancelled, {rule} since {iso(since)} ({self.s.cancel_after_minutes:g} min; "
                  f"${usd:,.2f} spent)" if usd is not None else
                  f"piqc-slurm: cancelled, {rule} since {iso(since)} ({self.s.cancel_after_minutes:g} min)")
        record["reason"] = reason
        if dry:
            record["action"] = "dry-run-cancel"
            log.warning("%s action=dry-run-cancel", base)
            return record
        record["action"] = "cancel"
        if self.s.notices:
            record["notice"] = self._notify(f"\n[piqc-slurm {iso(now)}] {reason}.\n")
        record["result"] = _scancel(self.job_id, reason)
        log.warning("%s action=cancel result=%s", base, safe(record["result"]))
        return record

    def _notify(self, text: str) -> str:
        """The notice to the user: appended to the output file, and mailed where [watch] mail is on."""
        got = self._append(text)
        if self.s.mail_prog and got != "not the batch host":  # one mail per job, not one per node
            sent = mail_user(self.s.mail_prog, self.user, f"piqc-slurm: job {self.job_id}: "
                             f"{text.strip().split(chr(10))[0].split('] ', 1)[-1][:120]}", text)
            if sent != "ok":
                log.warning("job %d: watch mail not sent: %s", self.job_id, sent)
            got = f"{got}; mail {sent}"
        return got

    def _append(self, text: str) -> str:
        from piqc_slurm.hooks.context import JobContext, is_batch_host
        from piqc_slurm.hooks.userreport import PatternError, append_as_user, expand_output_path, pattern_inputs

        try:
            ctx = JobContext(**{**self.job, "gpus": tuple(self.job.get("gpus") or ())})
        except TypeError as exc:
            return f"no job record ({exc})"
        if not is_batch_host(ctx):
            return "not the batch host"
        if ctx.uid is None or ctx.gid is None:
            return "job uid/gid unknown"
        spool_dir = str(self.run_dir.parent.parent)  # Spool.run_dir: SPOOL/run/KEY
        try:
            path = expand_output_path(ctx.stdout, pattern_inputs(ctx, spool_dir))
        except PatternError as exc:
            return str(exc)
        return append_as_user(path, text, ctx.uid, ctx.gid, ctx.user, 3.0)


def _scancel(job_id: int, reason: str, timeout: float = 10.0) -> str:
    """AdminComment (sacct shows it) then scancel, through slurm.run; 'ok' or why not."""
    import os

    from piqc_slurm.errors import SacctError
    from piqc_slurm.slurm.run import run_command, slurm_tool

    env = dict(os.environ)
    notes = []
    try:
        run_command([slurm_tool("scontrol", env), "update", f"JobId={int(job_id)}", f"AdminComment={reason}"],
                    env, timeout, "")
    except SacctError as exc:
        notes.append(f"AdminComment not set: {exc}")
    try:
        run_command([slurm_tool("scancel", env), str(int(job_id))], env, timeout, "")
    except SacctError as exc:
        return f"scancel failed: {exc}"
    return "; ".join(["ok", *notes])


def mail_user(prog: str, user: str, subject: str, body: str, timeout: float = 10.0) -> str:
    """`prog -s SUBJECT USER`, the body on stdin (slurmctld's MailProg call); 'ok' or why not.
    argv, no shell: the subject holds job text, and a user name starting with '-' is refused."""
    import subprocess

    if not _USER.fullmatch(user or ""):
        return f"no mail to a user named {user[:40]!r}"
    subject = subject.replace("\n", " ").replace("\r", " ")
    try:
        r = subprocess.run([prog, "-s", subject, user], input=body, capture_output=True, text=True,
                           timeout=timeout)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{prog}: {exc}"
    return "ok" if r.returncode == 0 else f"{prog} exited {r.returncode}: {(r.stderr or r.stdout).strip()[:200]}"


def _pricer(settings: WatchSettings, gpu_names: Sequence[str | None], partition: str):
    """cost(elapsed_s) -> USD for this job's GPUs, or None without prices."""
    if settings.prices is None or not gpu_names:
        return None
    try:
        from piqc_slurm.usage.catalog import load_catalog
        from piqc_slurm.usage.cost import job_cost, parts_of
        from piqc_slurm.usage.prices import Prices

        catalog = load_catalog()
        prices = Prices.from_config(settings.prices, catalog)
        gtype = catalog.type_of_name(next((n for n in gpu_names if n), None))
        prices.gpu_rate(gtype, partition)  # at start: a bad price table shows now, not at the first notice
    except Exception as exc:  # noqa: BLE001 - no dollars is no reason to stop watching
        log.warning("watch: no prices (%s: %s); notices without dollars", type(exc).__name__, exc)
        return None
    parts = parts_of(len(gpu_names), gtype)
    return lambda elapsed: job_cost(parts, elapsed, prices, partition=partition).usd
