"""`piqc-slurm notify-users`: the notes' figures (hand-computed from the findings put in the
store), the dry run's files, --send through a real SMTP server (aiosmtpd on 127.0.0.1), once
per period, the opt-out list, and job names as users write them."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime

import click
import pytest
from click.testing import CliRunner
from smtpserver import serve
from sqlalchemy import select
from sqlalchemy.orm import Session

from piqc_slurm import notify as N
from piqc_slurm.commands import notify as notify_command
from piqc_slurm.config import Config, defaults
from piqc_slurm.errors import ConfigError
from piqc_slurm.store.db import open_engine
from piqc_slurm.store.models import Finding, Job, NodeSummary, UserNotice

pytestmark = pytest.mark.unit

D0 = int(datetime(2026, 11, 20, tzinfo=UTC).timestamp())
DAY = 86400
SINCE, UNTIL = D0, D0 + 7 * DAY
ADVICE = {"IDLE_GPUS": "Request --gres=gpu:2.", "WRONG_TIER": "Run it on an L40S (e.g. --gres=gpu:l40s:2).",
          "UNDER_BATCHED": "Raise the batch size.", "INPUT_BOUND": "Feed the GPU faster.",
          "FAILED_SPEND": "Check the job's log for the failure."}


@pytest.fixture
def smtp():
    with serve() as server:
        yield server


def received(handler) -> dict[str, email.message.EmailMessage]:
    out = {}
    for env in handler.envelopes:
        (rcpt,) = env.rcpt_tos
        out[rcpt] = email.message_from_bytes(env.content, policy=email.policy.default)
    return out


def job(raw: int, user: str, end: int, name: str = "train", cluster: str = "sim") -> Job:
    return Job(cluster=cluster, job_id_raw=raw, job_id=str(raw), submit=end - 7200, user=user, account="a",
               partition="gpu", state="COMPLETED", start=end - 3600, end=end, elapsed=3600, alloc_gpus=4,
               gpu_type="h100", name=name)


def finding(j: Job, code: str, usd: float, **evidence) -> Finding:
    return Finding(job_ref=j.id, code=code, waste_usd=usd, evidence=evidence, analyzed_at=D0 + 8 * DAY,
                   sentence=f"{code} sentence with its own ${usd:,.2f}", advice=ADVICE.get(code, ""))


@pytest.fixture
def store(tmp_path):
    """alice: 101 IDLE_GPUS 40.125 + WRONG_TIER 12.5, 102 (<script> name) IDLE_GPUS 30, 103 UNDER_BATCHED
    25.333 (+ NO_SAMPLES 0), 104 FAILED_SPEND 100 on the site's side (not hers), 105 IDLE_GPUS 500 ending
    after the window, 106 INPUT_BOUND 7; bob (opted out): 201 FAILED_SPEND 60 + IDLE_GPUS 5; carol: 301
    IDLE_GPUS 49.994 (under $50.00); dave: 401 UNDER_BATCHED 80; '../evil': 501 IDLE_GPUS 90."""
    url = f"sqlite:///{tmp_path}/s.db"
    engine = open_engine(url)
    jobs = {101: job(101, "alice", D0 + DAY, "train-llm"), 102: job(102, "alice", D0 + 2 * DAY,
                                                                      "<script>alert(1)</script>"),
            103: job(103, "alice", D0 + 3 * DAY, "eval|../x"), 104: job(104, "alice", D0 + 4 * DAY),
            105: job(105, "alice", D0 + 8 * DAY), 106: job(106, "alice", D0 + 5 * DAY, "prep"),
            201: job(201, "bob", D0 + DAY), 301: job(301, "carol", D0 + DAY), 401: job(401, "dave", D0 + 6 * DAY),
            501: job(501, "../evil", D0 + DAY)}
    with Session(engine) as s, s.begin():
        s.add_all(jobs.values())
        s.flush()
        s.add(NodeSummary(cluster="sim", job_id_raw=101, node="gpu01", job=jobs[101], user="alice", gpu_count=4,
                          doc={}))
        s.add_all([
            finding(jobs[101], "IDLE_GPUS", 40.125), finding(jobs[101], "WRONG_TIER", 12.5),
            finding(jobs[102], "IDLE_GPUS", 30.0),
            finding(jobs[103], "UNDER_BATCHED", 25.333), finding(jobs[103], "NO_SAMPLES", 0.0),
            finding(jobs[104], "FAILED_SPEND", 100.0, side="site"),
            finding(jobs[105], "IDLE_GPUS", 500.0),
            finding(jobs[106], "INPUT_BOUND", 7.0),
            finding(jobs[201], "FAILED_SPEND", 60.0, side="user"), finding(jobs[201], "IDLE_GPUS", 5.0),
            finding(jobs[301], "IDLE_GPUS", 49.994),
            finding(jobs[401], "UNDER_BATCHED", 80.0),
            finding(jobs[501], "IDLE_GPUS", 90.0),
        ])
    engine.dispose()
    return url


def config_file(tmp_path, port: int, **notify_keys) -> str:
    keys = {"threshold_usd": 50.0, "top_jobs": 3, "opt_out": ["bob"], "domain": "example.org", **notify_keys}
    body = "\n".join(f"{k} = {v!r}".replace("'", '"') for k, v in keys.items())
    path = tmp_path / "piqc.toml"
    path.write_text(f'[mail]\nhost = "127.0.0.1"\nport = {port}\nstarttls = false\ntimeout = 5.0\n'
                    f'from = "gpu-notes@example.org"\n\n[notify]\n{body}\n')
    return str(path)


def run(config: str, url: str, *args: str):
    g = click.Group()
    notify_command.register(g)
    return CliRunner().invoke(g, ["notify-users", *args], obj={"config_path": config, "db": url})


WINDOW = ("-S", f"uts{SINCE}", "-E", f"uts{UNTIL}")


def notices(url: str) -> list[UserNotice]:
    engine = open_engine(url)
    with Session(engine) as s:
        rows = list(s.scalars(select(UserNotice).order_by(UserNotice.user)))
    engine.dispose()
    return rows


def test_dry_run_writes_the_notes_with_the_findings_figures(store, tmp_path, smtp):
    out = tmp_path / "notes"
    r = run(config_file(tmp_path, smtp.port), store, *WINDOW, "--out", str(out))
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir()) == ["alice.html", "alice.txt", "dave.html", "dave.txt"]
    assert "../evil" in r.stderr and "bob: no note: opted out" in r.stderr
    assert "1 user below the $50.00 threshold" in r.stdout  # carol: 49.994 is $49.99
    assert not (tmp_path / "evil.txt").exists()
    text = (out / "alice.txt").read_text()
    # by hand: 40.125 + 12.5 + 30 + 25.333 + 7 = 114.958 (104 is the site's failure, 105 ends after the window)
    assert "wasted an estimated $114.96 of GPU time, on 4 jobs." in text
    # IDLE_GPUS 40.125 + 30 = 70.125 -> $70.13 beats UNDER_BATCHED 25.333, WRONG_TIER 12.5, INPUT_BOUND 7
    assert "The one change that saves most: IDLE_GPUS, $70.13 on 2 jobs." in text
    assert "  Request --gres=gpu:2. (for job 101, the costliest)" in text
    body = [ln.split() for ln in text.splitlines() if ln.startswith("  10")]
    # top 3 by job waste: 101 40.125 + 12.5 = 52.625 -> $52.63, 102 $30.00, 103 $25.33; 106 ($7.00) not listed
    assert [(b[0], b[1]) for b in body] == [("101", "$52.63"), ("102", "$30.00"), ("103", "$25.33")]
    assert "IDLE_GPUS, WRONG_TIER: Request --gres=gpu:2." in text
    assert "... and 1 more job with waste." in text and "$7.00" not in text and "$500" not in text
    assert "<script>alert(1)</script>" in text and "eval|../x" in text  # plain text: shown as written
    assert "sentence" not in text  # the findings' sentences carry their own formatting of dollars
    html = (out / "alice.html").read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>" not in html
    assert "eval|../x" in html and "<b>$114.96</b>" in html and "$52.63" in html
    assert "wasted an estimated $80.00 of GPU time, on 1 job." in (out / "dave.txt").read_text()
    assert smtp.envelopes == [] and notices(store) == []  # a dry run sends and records nothing


def test_send_delivers_the_dry_run_notes_once_per_period(store, tmp_path, smtp, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = config_file(tmp_path, smtp.port)
    out = tmp_path / "dry"
    assert run(config, store, *WINDOW, "--out", str(out)).exit_code == 0
    r = run(config, store, *WINDOW, "--send")
    assert r.exit_code == 0, r.output
    assert "alice: $114.96 on 4 jobs: sent to alice@example.org" in r.stdout
    got = received(smtp)
    assert sorted(got) == ["alice@example.org", "dave@example.org"]  # not bob (opted out), carol, ../evil
    for user in ("alice", "dave"):
        msg = got[f"{user}@example.org"]
        assert msg.get_content_type() == "multipart/alternative"
        assert msg["From"] == "gpu-notes@example.org"
        plain, html = msg.iter_parts()
        assert plain.get_content() == (out / f"{user}.txt").read_bytes().decode("utf-8")
        assert html.get_content() == (out / f"{user}.html").read_bytes().decode("utf-8")
    assert got["alice@example.org"]["Subject"] == "Your GPU jobs: $114.96 of GPU time to save"
    rows = notices(store)
    assert [(n.user, n.cluster, n.window_start, n.window_end) for n in rows] == [
        ("alice", "", SINCE, UNTIL), ("dave", "", SINCE, UNTIL)]
    assert [n.waste_usd for n in rows] == pytest.approx([114.958, 80.0])
    assert not (tmp_path / "piqc-notes").exists()  # --send writes no files without --out

    again = run(config, store, *WINDOW, "--send")
    assert again.exit_code == 0, again.output
    assert len(smtp.envelopes) == 2 and len(notices(store)) == 2
    assert "alice: no note: sent a note at" in again.stderr and "0 notes sent" in again.stdout


def test_an_opted_out_user_gets_nothing(store, tmp_path, smtp):
    r = run(config_file(tmp_path, smtp.port, opt_out=["alice", "bob"]), store, *WINDOW, "--send")
    assert r.exit_code == 0, r.output
    assert sorted(received(smtp)) == ["dave@example.org"]
    assert [n.user for n in notices(store)] == ["dave"]


def test_bob_without_the_opt_out_gets_his_failed_spend(store, tmp_path, smtp):
    out = tmp_path / "notes"
    assert run(config_file(tmp_path, smtp.port, opt_out=[]), store, *WINDOW, "--out", str(out)).exit_code == 0
    text = (out / "bob.txt").read_text()
    # a failure on the user's side is his: 60 + 5 = 65
    assert "$65.00 of GPU time, on 1 job." in text and "FAILED_SPEND, $60.00 on 1 job." in text


def test_a_note_older_than_the_period_does_not_hold_the_next(store, tmp_path):
    engine = open_engine(store)
    now = UNTIL + 3600
    with Session(engine) as s, s.begin():
        s.add(UserNotice(cluster="", user="alice", sent_at=now - 8 * DAY, window_start=0, window_end=1, waste_usd=1))
        s.add(UserNotice(cluster="", user="dave", sent_at=now - 6 * DAY, window_start=0, window_end=1, waste_usd=1))
    cfg = Config({**defaults(), "notify.opt_out": ["bob"], "notify.period_days": 7})
    plan = N.plan(engine, cfg, SINCE, UNTIL, now, tz=UTC)
    engine.dispose()
    assert [n.user for n in plan.notes] == ["alice"]
    assert ("dave", f"sent a note at {datetime.fromtimestamp(now - 6 * DAY, UTC):%Y-%m-%d %H:%M}, within "
                    "notify.period_days = 7") in plan.skipped


def test_a_symlink_where_a_note_goes_is_replaced_not_followed(store, tmp_path, smtp):
    out = tmp_path / "notes"
    out.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("keep me\n")
    (out / "alice.txt").symlink_to(victim)
    assert run(config_file(tmp_path, smtp.port), store, *WINDOW, "--out", str(out)).exit_code == 0
    assert victim.read_text() == "keep me\n"
    assert not (out / "alice.txt").is_symlink() and "$114.96" in (out / "alice.txt").read_text()
    assert sorted(p.name for p in out.iterdir()) == ["alice.html", "alice.txt", "dave.html", "dave.txt"]


def test_send_without_a_domain_or_a_server_sends_nothing(store, tmp_path, smtp):
    r = run(config_file(tmp_path, smtp.port, domain=""), store, *WINDOW, "--send")
    assert isinstance(r.exception, ConfigError) and "notify.domain" in str(r.exception)
    path = tmp_path / "nohost.toml"
    path.write_text('[notify]\ndomain = "example.org"\n')
    r = run(str(path), store, *WINDOW, "--send")
    assert isinstance(r.exception, ConfigError) and "[mail] host" in str(r.exception)
    assert smtp.envelopes == [] and notices(store) == []


def test_unsafe_user_names_get_no_file():
    note = N.Note("../evil", "s", "t", "<p>h</p>", 1.0, 1)
    for name in ("../evil", ".hidden", "a/b", ""):
        note.user = name
        with pytest.raises(ValueError):
            N.write_note("/nonexistent-never-made", note)


def test_default_window_is_the_period_up_to_today(tmp_path, smtp):
    from piqc_slurm.timespec import start_of_today

    today = start_of_today()
    url = f"sqlite:///{tmp_path}/w.db"
    engine = open_engine(url)
    with Session(engine) as s, s.begin():
        # erin: ended 2 days before today 00:00 (in the 3-day window); frank: 4 days before (not); gina: today
        jobs = [job(1, "erin", today - 2 * DAY), job(2, "frank", today - 4 * DAY), job(3, "gina", today + 60)]
        s.add_all(jobs)
        s.flush()
        s.add_all([finding(j, "IDLE_GPUS", 60.0) for j in jobs])
    engine.dispose()
    out = tmp_path / "notes"
    r = run(config_file(tmp_path, smtp.port, period_days=3), url, "--out", str(out))
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir()) == ["erin.html", "erin.txt"]
    assert "(3 days)" in (out / "erin.txt").read_text()


def test_help_teaches():
    g = click.Group()
    notify_command.register(g)
    r = CliRunner().invoke(g, ["notify-users", "--help"])
    assert r.exit_code == 0
    words = " ".join(r.output.split())
    assert "period_days" in words and "days up to 00:00 today" in words
    assert "piqc-slurm notify-users --send" in words and "00:00 yesterday" not in words
