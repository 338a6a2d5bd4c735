"""`piqc-slurm notify-users`: a short note to each user whose jobs wasted the most.

For a window [since, until) of job End times, per user, from the findings
`piqc-slurm analyze` stored (their waste_usd, code and advice; never
recomputed):

- the user's waste: the sum of their findings' waste_usd. Findings a user
  cannot act on are left out: NO_SAMPLES (no dollars) and FAILED_SPEND on the
  site's side (node failure, preemption: evidence side = "site");
- their top [notify] top_jobs jobs by waste (a job's waste: the sum of its
  findings), each with its codes and the advice of its costliest finding;
- "the one change that saves most": the code with the largest summed waste,
  with the advice of its costliest finding.

A user gets a note when that waste, in cents, reaches [notify] threshold_usd,
unless listed in [notify] opt_out or sent one (user_notices) within
[notify] period_days. A dry run writes `<user>.txt` and `<user>.html` to a
directory (a temp file made with O_EXCL|O_NOFOLLOW, then renamed: an existing
symlink is replaced, never followed) and records nothing; `send` mails each
(piqc_slurm.mail) and records one user_notices row per user sent.

Every dollar figure is the stored waste_usd, summed exactly (math.fsum) and
printed by usage.cost.money_text: the findings' sentences are not quoted, as
they carry figures of their own formatting (`piqc-slurm seff JOBID` shows them).
Job names are the user's own text: the HTML is rendered by Jinja2 with
autoescape on, and the text replaces unprintable characters."""

from __future__ import annotations

import math
import os
import re
import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any

from piqc_slurm.usage.cost import money, money_text

DAY = 86400
USER_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,63}$")  # no '/', no leading '.', nothing for a header
NAME_MAX = 60  # characters of a job name a note shows


@dataclass(frozen=True)
class Row:
    """One finding of one job, as read from the store."""

    job_ref: int
    cluster: str
    user: str
    job_id: str
    name: str
    code: str
    waste_usd: float
    advice: str


@dataclass
class JobWaste:
    job_ref: int
    cluster: str
    job_id: str
    name: str
    waste_usd: float
    codes: tuple[str, ...]  # by waste, largest first
    advice: str  # of its costliest finding


@dataclass
class Change:
    code: str
    waste_usd: float
    jobs: int
    advice: str
    job_id: str  # whose finding the advice is


@dataclass
class UserWaste:
    user: str
    waste_usd: float
    jobs: list[JobWaste]  # every job with waste, costliest first
    change: Change | None
    clusters: tuple[str, ...]


@dataclass
class Note:
    user: str
    subject: str
    text: str
    html: str
    waste_usd: float
    jobs: int
    clusters: tuple[str, ...] = ()


@dataclass
class Plan:
    notes: list[Note] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (user, why)
    below: int = 0  # users under the threshold


# --- reading ---------------------------------------------------------------------

def actionable(code: str, evidence: Mapping[str, Any] | None) -> bool:
    """Whether a finding is the user's to act on."""
    if code == "NO_SAMPLES":
        return False
    return not (code == "FAILED_SPEND" and (evidence or {}).get("side") == "site")


def load(engine, since: int, until: int, cluster: str | None = None) -> list[Row]:
    """The actionable findings with waste of the jobs whose End is in [since, until)."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from piqc_slurm.store.models import Finding, Job

    q = (select(Finding.job_ref, Job.cluster, Job.user, Job.job_id, Job.name, Finding.code, Finding.waste_usd,
                Finding.advice, Finding.evidence)
         .join(Job, Job.id == Finding.job_ref)
         .where(Job.end >= since, Job.end < until, Finding.waste_usd > 0)
         .order_by(Finding.job_ref, Finding.code))
    if cluster:
        q = q.where(Job.cluster == cluster)
    with Session(engine) as s:
        return [Row(int(r.job_ref), r.cluster, r.user or "", r.job_id, r.name or "", r.code, float(r.waste_usd),
                    r.advice or "")
                for r in s.execute(q) if actionable(r.code, r.evidence)]


def per_user(rows: Iterable[Row]) -> dict[str, UserWaste]:
    """Each user's waste, jobs by waste and the change that saves most."""
    by_user: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        by_user[r.user].append(r)
    out = {}
    for user, mine in by_user.items():
        by_job: dict[int, list[Row]] = defaultdict(list)
        by_code: dict[str, list[Row]] = defaultdict(list)
        for r in mine:
            by_job[r.job_ref].append(r)
            by_code[r.code].append(r)
        jobs = []
        for ref, fs in by_job.items():
            fs = sorted(fs, key=lambda f: (-f.waste_usd, f.code))
            jobs.append(JobWaste(ref, fs[0].cluster, fs[0].job_id, fs[0].name, math.fsum(f.waste_usd for f in fs),
                                 tuple(f.code for f in fs), fs[0].advice))
        jobs.sort(key=lambda j: (-j.waste_usd, j.job_ref))
        sums = {code: math.fsum(f.waste_usd for f in fs) for code, fs in by_code.items()}
        code = min(sums, key=lambda c: (-sums[c], c))
        top = min(by_code[code], key=lambda f: (-f.waste_usd, f.job_ref))
        change = Change(code, sums[code], len({f.job_ref for f in by_code[code]}), top.advice, top.job_id)
        out[user] = UserWaste(user, math.fsum(r.waste_usd for r in mine), jobs, change,
                              tuple(sorted({r.cluster for r in mine})))
    return out


def last_notices(engine, users: Iterable[str], after: int) -> dict[str, int]:
    """The latest note sent to each of `users` after `after` (epoch seconds)."""
    from sqlalchemy import func, select
    from sqlalchemy.orm import Session

    from piqc_slurm.store.models import UserNotice

    names = sorted(set(users))
    if not names:
        return {}
    out: dict[str, int] = {}
    with Session(engine) as s:
        for i in range(0, len(names), 500):
            q = (select(UserNotice.user, func.max(UserNotice.sent_at))
                 .where(UserNotice.user.in_(names[i:i + 500]), UserNotice.sent_at > after)
                 .group_by(UserNotice.user))
            out.update({u: int(t) for u, t in s.execute(q)})
    return out


# --- the note --------------------------------------------------------------------

def display_name(name: str) -> str:
    """A job name fit to show: unprintable characters as '?', at most NAME_MAX characters."""
    shown = "".join(c if c.isprintable() else "?" for c in name)
    return shown if len(shown) <= NAME_MAX else shown[:NAME_MAX - 3] + "..."


def _when(ts: int, tz: tzinfo | None) -> str:
    return datetime.fromtimestamp(ts, tz).strftime("%Y-%m-%d %H:%M")


def _days(since: int, until: int) -> str:
    return f"{(until - since) / DAY:g}"


def subject_of(template: str, user: str, waste: float, since: int, until: int) -> str:
    values = {"user": user, "waste": money_text(waste), "days": _days(since, until)}
    return re.sub(r"\{(user|waste|days)\}", lambda m: values[m.group(1)], template)


HTML = """\
<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>{{ subject }}</title></head>
<body style="font-family: sans-serif; max-width: 46em; color: #222">
<p>Hello {{ user }},</p>
<p>Your GPU jobs that ended from {{ since }} to {{ until }} ({{ days }} days)\
{% if clusters %} on {{ clusters }}{% endif %}
wasted an estimated <b>${{ waste }}</b> of GPU time, on {{ njobs }} job{{ "s" if njobs != 1 else "" }}.</p>
{% if change %}<h3 style="margin-bottom: 0.3em">The one change that saves most</h3>
<p style="margin-top: 0"><b>{{ change.code }}</b>: ${{ change.usd }} on {{ change.jobs }} \
job{{ "s" if change.jobs != 1 else "" }}.<br>
{{ change.advice }} <span style="color: #666">(for job {{ change.job_id }}, the costliest)</span></p>
{% endif %}<h3 style="margin-bottom: 0.3em">Your costliest jobs</h3>
<table style="border-collapse: collapse" cellpadding="4">
<tr style="text-align: left; border-bottom: 1px solid #ccc"><th>Job</th><th>Name</th>\
<th style="text-align: right">Waste</th><th>Found</th><th>What to change</th></tr>
{% for j in jobs %}<tr style="vertical-align: top"><td>{{ j.job_id }}</td><td>{{ j.name }}</td>\
<td style="text-align: right">${{ j.waste }}</td><td>{{ j.codes }}</td><td>{{ j.advice }}</td></tr>
{% endfor %}</table>
{% if more %}<p>... and {{ more }} more job{{ "s" if more != 1 else "" }} with waste.</p>
{% endif %}<p style="color: #666; font-size: 90%">One job's details: <code>piqc-slurm seff JOBID</code>.
The figures are estimates from piqc-slurm's findings (GPU time at its price).
You get at most one such note every {{ period }} days; your admins can take you off the list.</p>
</body>
</html>
"""


def _html_template():
    import jinja2

    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    return env.from_string(HTML)


def render(uw: UserWaste, *, since: int, until: int, top: int, period_days: int, subject_template: str,
           tz: tzinfo | None = None, template=None) -> Note:
    """The text and HTML note for one user."""
    jobs = uw.jobs[:top]
    shown = [{"job_id": j.job_id, "name": display_name(j.name), "waste": money_text(j.waste_usd),
              "codes": ", ".join(j.codes), "advice": j.advice} for j in jobs]
    c = uw.change
    change = None if c is None else {"code": c.code, "usd": money_text(c.waste_usd), "jobs": c.jobs,
                                      "advice": c.advice, "job_id": c.job_id}
    clusters = ("cluster " if len(uw.clusters) == 1 else "clusters ") + ", ".join(uw.clusters) if uw.clusters else ""
    subject = subject_of(subject_template, uw.user, uw.waste_usd, since, until)
    ctx = {"subject": subject, "user": uw.user, "since": _when(since, tz), "until": _when(until, tz),
           "days": _days(since, until), "clusters": clusters, "waste": money_text(uw.waste_usd),
           "njobs": len(uw.jobs), "change": change, "jobs": shown, "more": len(uw.jobs) - len(jobs),
           "period": period_days}

    lines = [f"Hello {uw.user},", "",
             f"Your GPU jobs that ended from {ctx['since']} to {ctx['until']} ({ctx['days']} days)"
             + (f" on {clusters}" if clusters else ""),
             f"wasted an estimated ${ctx['waste']} of GPU time, on {len(uw.jobs)} job{'s' * (len(uw.jobs) != 1)}.",
             ""]
    if change:
        lines += [f"The one change that saves most: {c.code}, ${change['usd']} on {c.jobs} job{'s' * (c.jobs != 1)}.",
                  f"  {c.advice} (for job {c.job_id}, the costliest)", ""]
    wid = max([len("JobID")] + [len(j["job_id"]) for j in shown])
    wus = max([len("Waste")] + [len(j["waste"]) + 1 for j in shown])
    lines.append("Your costliest jobs:")
    lines.append(f"  {'JobID':<{wid}}  {'Waste':>{wus}}  Name / found / what to change")
    for j in shown:
        lines.append(f"  {j['job_id']:<{wid}}  {'$' + j['waste']:>{wus}}  {j['name']}")
        lines.append(f"  {'':<{wid}}  {'':>{wus}}  {j['codes']}: {j['advice']}")
    if ctx["more"]:
        lines.append(f"  ... and {ctx['more']} more job{'s' * (ctx['more'] != 1)} with waste.")
    lines += ["", "One job's details: piqc-slurm seff JOBID.",
              "The figures are estimates from piqc-slurm's findings (GPU time at its price).",
              f"You get at most one such note every {period_days} days; your admins can take you off the list.", ""]
    html = (template or _html_template()).render(**ctx)
    return Note(uw.user, subject, "\n".join(lines), html, uw.waste_usd, len(uw.jobs), uw.clusters)


# --- choosing who gets one ---------------------------------------------------------

def plan(engine, cfg, since: int, until: int, now: int, tz: tzinfo | None = None) -> Plan:
    """Who gets a note for the window, and each note; who is left out and why."""
    rows = load(engine, since, until, cfg["cluster"] or None)
    users = per_user(rows)
    threshold = float(cfg["notify.threshold_usd"])
    period = int(cfg["notify.period_days"])
    opt_out = set(cfg["notify.opt_out"])
    out = Plan()
    over = []
    for user in sorted(users):
        uw = users[user]
        if money(uw.waste_usd) < threshold:
            out.below += 1
            continue
        if user in opt_out:
            out.skipped.append((user, "opted out (notify.opt_out)"))
        elif not USER_NAME.match(user):
            out.skipped.append((user, "not a user name piqc-slurm writes a file or an address for"))
        else:
            over.append(uw)
    sent = last_notices(engine, [u.user for u in over], now - period * DAY)
    template = _html_template()
    for uw in over:
        if uw.user in sent:
            out.skipped.append((uw.user, f"sent a note at {_when(sent[uw.user], tz)}, within "
                                         f"notify.period_days = {period}"))
            continue
        out.notes.append(render(uw, since=since, until=until, top=int(cfg["notify.top_jobs"]), period_days=period,
                                subject_template=cfg["notify.subject"], tz=tz, template=template))
    return out


# --- writing and sending -------------------------------------------------------------

def _write_new(directory: Path, name: str, data: bytes) -> Path:
    """`directory/name` replaced by `data`: a fresh temp file (O_EXCL, O_NOFOLLOW) renamed over it."""
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    target = directory / name
    os.replace(tmp, target)
    return target


def write_note(out_dir: str | Path, note: Note) -> tuple[Path, Path]:
    """<user>.txt and <user>.html under out_dir (made 0700 if missing)."""
    if not USER_NAME.match(note.user):
        raise ValueError(f"unsafe user name for a file: {note.user!r}")
    directory = Path(out_dir)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    return (_write_new(directory, f"{note.user}.txt", note.text.encode("utf-8")),
            _write_new(directory, f"{note.user}.html", note.html.encode("utf-8")))


def address(user: str, domain: str) -> str:
    return f"{user}@{domain}"


def send(engine, cfg, notes: Sequence[Note], since: int, until: int, now: int,
         echo: Callable[[Note, str], None] | None = None) -> int:
    """Mail each note and record it (one user_notices row per user, committed as it is sent, so a
    failure half way keeps the record of those that went). Returns how many were sent."""
    from sqlalchemy.orm import Session

    from piqc_slurm import mail
    from piqc_slurm.errors import ConfigError
    from piqc_slurm.store.models import UserNotice

    if not notes:
        return 0
    domain = cfg["notify.domain"]
    if not domain:
        raise ConfigError("notify.domain is not set: a user's address is USER@domain (the dry run, without "
                          "--send, writes the notes without it)")
    mail.check(cfg)
    sender = mail.sender_address(cfg, cfg["notify.from"])
    cluster = cfg["cluster"] or ""
    done = 0
    for note in notes:
        to = address(note.user, domain)
        mail.send(mail.compose(note.subject, note.html, note.text, sender, [to]), cfg)
        with Session(engine) as s, s.begin():
            s.add(UserNotice(cluster=cluster, user=note.user, sent_at=int(now), window_start=int(since),
                             window_end=int(until), waste_usd=float(note.waste_usd)))
        done += 1
        if echo:
            echo(note, to)
    return done
