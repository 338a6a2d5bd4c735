"""`piqc-slurm digest` on scenarios: an empty window, one job, the 100-GPU week. The page's
numbers are checked against the examples' hand-computed figures and against the store read
directly (sqlite3), never against the digest's own code."""

from __future__ import annotations

import importlib.util
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ENV = {"TZ": "UTC", "PATH": "/usr/bin:/bin"}


def run(db: Path, *argv: str, config: Path | None = None) -> subprocess.CompletedProcess:
    cfg = config or db.parent / "piqc.toml"
    if not cfg.exists():
        cfg.write_text("")
    r = subprocess.run([sys.executable, "-m", "piqc_slurm", "--config", str(cfg), "--db", f"sqlite:///{db}", *argv],
                       capture_output=True, text=True, env=ENV)
    assert r.returncode == 0, r.stderr
    return r


def text(html: str) -> str:
    """The page's visible text, one space between words (tags dropped, entities of < > & decoded)."""
    t = re.sub(r"<svg.*?</svg>", " ", html, flags=re.S)
    t = re.sub(r"<style.*?</style>", " ", t, flags=re.S)
    t = re.sub(r"<[^>]+>", " ", t)
    t = t.replace("&lt;", "<").replace("&gt;", ">").replace("&#34;", '"').replace("&#39;", "'").replace("&amp;", "&")
    return re.sub(r"\s+", " ", t)


def card(page: str, label: str) -> str:
    m = re.search(label + r" (-?\$[\d,]+\.\d\d)", page)
    assert m, f"no {label} card"
    return m.group(1)


def test_an_empty_store_and_window_render(tmp_path):
    db = tmp_path / "s.db"
    run(db, "db", "init")
    run(db, "analyze", "-q", "-S", "2026-11-01", "-E", "2026-11-02")  # an empty store: no jobs
    out = tmp_path / "d.html"
    r = run(db, "digest", "-S", "2026-11-01", "-E", "2026-11-02", "-o", str(out))
    page = text(out.read_text())
    assert "No jobs ended in this window" in page
    assert card(page, "Spend") == "$0.00" and card(page, "Waste") == "$0.00"
    assert "0 jobs, $0.00 spent" in r.stderr


@pytest.fixture(scope="module")
def batch(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("batch")
    db = d / "s.db"
    run(db, "simulate", "-q", "--scenario", str(EXAMPLES / "batch-of-one" / "scenario.json"))
    run(db, "analyze", "-q", "-S", "2026-11-01", "-E", "2026-12-01")
    return db


def test_one_job(batch, tmp_path):
    # 2026-11-23 holds one job of the example: 3001, 1 H100 x 3 h x $4.00 = $12.00, UNDER_BATCHED
    # by GPM: 12.00 x (1 - 0.20 / 0.80) = $9.00 (examples/batch-of-one/README.md, by hand)
    out = tmp_path / "one.html"
    run(batch, "digest", "-S", "2026-11-23", "-E", "2026-11-24", "-o", str(out))
    page = text(out.read_text())
    assert card(page, "Spend") == "$12.00"
    assert card(page, "Waste") == "$9.00"
    assert card(page, "Cost per completed job") == "$12.00"
    assert "1 of 1 jobs completed" in page and "75% of spend" in page
    assert re.search(r"\$9\.00 3001 rag-answer-nightly carol search UNDER_BATCHED", page)
    assert "no previous window to compare" in page   # nothing ended on 2026-11-22


def test_the_previous_window_is_compared(batch, tmp_path):
    # 2026-11-24: job 3002, $12.00 again; 2026-11-25: 3003 failed after 15 min ($1.00) and 3004 ($12.00)
    out = tmp_path / "d.html"
    run(batch, "digest", "-S", "2026-11-25", "-E", "2026-11-26", "-o", str(out))
    page = text(out.read_text())
    assert card(page, "Spend") == "$13.00"
    assert "▲ 8% vs the previous window" in page                 # 13.00 / 12.00 - 1 = 8.3%
    assert card(page, "Cost per completed job") == "$13.00"      # both runs paid for one result
    assert "1 of 2 jobs completed" in page


@pytest.fixture(scope="module")
def week(tmp_path_factory) -> tuple[Path, dict]:
    spec = importlib.util.spec_from_file_location("cluster_week_generate", EXAMPLES / "cluster-week" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    d = tmp_path_factory.mktemp("week")
    (d / "week.json").write_text(module.dumps(module.generate(7)))
    db = d / "week.db"
    run(db, "simulate", "-q", "--scenario", str(d / "week.json"))
    run(db, "analyze", "-q", "-S", "2026-11-16", "-E", "2026-11-26")
    run(db, "gaps", "-S", "2026-11-16", "-E", "2026-11-26")
    section = (EXAMPLES / "cluster-week" / "README.md").read_text().split("## Totals for seed 7", 1)[1]
    stated = dict(re.findall(r"^(.+?)\s{2,}(\S+)$", re.search(r"```text\n(.*?)```", section, re.S).group(1), re.M))
    return db, stated


def test_the_week(week, tmp_path):
    db, stated = week
    out = tmp_path / "week.html"
    run(db, "digest", "-S", "2026-11-16", "-E", "2026-11-26", "-o", str(out))
    html = out.read_text()
    page = text(html)
    # the README's totals, computed from the JSON by plain Python
    assert card(page, "Spend").replace(",", "") == "$" + stated["spend USD"]
    assert f"{int(stated['completed jobs']):,} of" in page
    with sqlite3.connect(db) as c:
        by_code = dict(c.execute("SELECT code, COUNT(*) FROM findings GROUP BY code").fetchall())
        top = c.execute("SELECT waste_usd, j.job_id FROM findings f JOIN jobs j ON j.id = f.job_ref "
                        "ORDER BY waste_usd DESC LIMIT 1").fetchone()
        waste = c.execute("SELECT SUM(waste_usd) FROM findings").fetchone()[0]
        idle_h = c.execute("SELECT SUM(gpus * (\"end\" - start)) / 3600.0 FROM idle_gaps WHERE kind = 'idle'"
                           ).fetchone()[0]
    for code, n in by_code.items():                     # every code's count, as the store holds it
        assert re.search(rf"\b{code} {n:,} \$", page), code
    assert f"${top[0]:,.2f} {top[1]} " in page           # the first row: the finding with the most dollars
    assert card(page, "Waste") == f"${waste:,.2f}"
    assert re.search(rf"total \d+ {idle_h:,.1f} \$", page)  # idle GPU-hours, the stored stretches summed
    assert "Recurring jobs" in page and "regression" in page  # eval-suite's slow runs are marked
    assert html.count("<svg") >= 4 and "<script" not in html
    assert "http://" not in html.replace("http://www.w3.org/", "") and "https://" not in html


def test_top_n_and_the_rest(week, tmp_path):
    from piqc_slurm import digest

    db, _ = week
    out = tmp_path / "w.html"
    run(db, "digest", "-S", "2026-11-16", "-E", "2026-11-26", "-o", str(out))
    page = text(out.read_text())
    with sqlite3.connect(db) as c:
        n_findings = c.execute("SELECT COUNT(*) FROM findings WHERE waste_usd > 0").fetchone()[0]
        n_accounts = c.execute("SELECT COUNT(DISTINCT account) FROM jobs").fetchone()[0]
        n_users = c.execute('SELECT COUNT(DISTINCT "user") FROM jobs').fetchone()[0]
    assert n_findings > digest.TOP_FINDINGS
    assert re.search(rf"and {n_findings - digest.TOP_FINDINGS:,} more findings worth \$", page)
    if n_users > digest.TOP_GROUPS:
        assert f"{n_users - digest.TOP_GROUPS} more users" in page
    assert n_accounts <= digest.TOP_GROUPS and "more accounts" not in page


def test_mail_text_part_has_the_headline(week):
    from piqc_slurm import digest
    from piqc_slurm.config import defaults
    from piqc_slurm.query.gpu import load_price_book
    from piqc_slurm.query.store import Reader
    from piqc_slurm.report.digest_page import render_text

    db, stated = week
    r = Reader(f"sqlite:///{db}")
    try:
        import calendar

        s = calendar.timegm((2026, 11, 16, 0, 0, 0))
        data = digest.build(r, s, s + 10 * 86400, defaults(), load_price_book(r, defaults()))
    finally:
        r.close()
    body = render_text(data)
    spend = float(stated["spend USD"])
    assert body.splitlines()[2].startswith(f"Spend ${spend:,.2f}")
    assert "What to change:" in body and "<td" not in body and "<svg" not in body  # plain text, no markup


def test_mail_to_sends_the_file_as_the_html_part(batch, tmp_path):
    """--mail-to through a real SMTP server (aiosmtpd) on 127.0.0.1: multipart/alternative, the
    HTML part byte for byte the file written, the text part the headline."""
    from smtpserver import serve

    with serve() as server:
        cfg = tmp_path / "piqc.toml"
        cfg.write_text(f'[mail]\nhost = "127.0.0.1"\nport = {server.port}\nstarttls = false\n'
                       'from = "piqc@example.org"\n')
        out = tmp_path / "d.html"
        r = run(batch, "digest", "-S", "2026-11-23", "-E", "2026-11-24", "-o", str(out), "--mail-to",
                "admins@example.org", "--mail-to", "boss@example.org", config=cfg)
    got = server.envelopes
    assert "mailed to admins@example.org, boss@example.org" in r.stderr
    assert len(got) == 1 and sorted(got[0].rcpt_tos) == ["admins@example.org", "boss@example.org"]
    (msg,) = server.messages()
    assert msg.get_content_type() == "multipart/alternative" and msg["From"] == "piqc@example.org"
    assert "$12.00" in msg["Subject"] and "$9.00 waste" in msg["Subject"]
    plain, html = msg.get_payload()
    assert plain.get_content_type() == "text/plain" and html.get_content_type() == "text/html"
    assert html.get_payload(decode=True) == out.read_bytes()
    assert plain.get_content().splitlines()[2] == "Spend $12.00 (no previous window to compare)"


def test_the_live_watch_notices_and_cancels(batch, tmp_path):
    """Job 3001 (1 H100, $4.00/h, started at S) with a live IDLE_GPUS notice at S+1h and the cancel
    policy's cancel at S+2h, $8.00 spent: with a 4 h time limit it saved 8.00 / 2 h x 2 h = $8.00."""
    import json
    import shutil

    from sqlalchemy.orm import Session

    from piqc_slurm.store import open_engine
    from piqc_slurm.store.summaries import upsert_summary

    db = tmp_path / "w.db"
    shutil.copy(batch, db)
    with sqlite3.connect(db) as c:
        start, doc = c.execute("SELECT j.start, s.doc FROM jobs j JOIN node_summaries s ON s.job_ref = j.id "
                               "WHERE j.job_id = '3001'").fetchone()
        c.execute("UPDATE jobs SET extra = ? WHERE job_id = '3001'", (json.dumps({"Timelimit": "04:00:00"}),))
    doc = json.loads(doc)
    doc["watch"] = [
        {"rule": "IDLE_GPUS", "at": start + 3600, "since": start + 1800, "gpus": [0], "action": "notice",
         "evidence": "all 1 GPUs active under 5% of the time for 30 min", "usd": 4.0, "notice": "ok"},
        {"rule": "IDLE_GPUS", "at": start + 7200, "since": start + 1800, "action": "cancel", "usd": 8.0,
         "reason": "piqc-slurm: cancelled, IDLE_GPUS since ...", "result": "ok"}]
    engine = open_engine(f"sqlite:///{db}")
    with Session(engine) as s, s.begin():
        upsert_summary(s, doc)
    engine.dispose()
    with sqlite3.connect(db) as c:
        rows = c.execute("SELECT rule, action, at - :s, usd FROM watch_actions ORDER BY at", {"s": start}).fetchall()
    assert rows == [("IDLE_GPUS", "notice", 3600, 4.0), ("IDLE_GPUS", "cancel", 7200, 8.0)]
    out = tmp_path / "w.html"
    run(db, "digest", "-S", "2026-11-23", "-E", "2026-11-24", "-o", str(out))
    page = text(out.read_text())
    assert "the cancels saved $8.00" in page
    assert re.search(r"IDLE_GPUS 1 1 0 1 0", page), page[page.find("Live watch"):][:400]
    assert re.search(r"3001 carol IDLE_GPUS \S+ \S+ \S+ \S+ \$8\.00 \$8\.00", page)
    # the mail's text part says the same
    from piqc_slurm import digest as D
    from piqc_slurm.config import Config, defaults
    from piqc_slurm.query.gpu import load_price_book
    from piqc_slurm.query.store import Reader
    from piqc_slurm.report.digest_page import render_text

    reader = Reader(f"sqlite:///{db}")
    try:
        cfg = Config(defaults())
        data = D.build(reader, start - 6 * 3600, start + 18 * 3600, cfg, load_price_book(reader, cfg))
    finally:
        reader.close()
    body = render_text(data)
    assert re.search(r"IDLE_GPUS +1 jobs +1 notices +0 warnings +1 cancels", body), body
    assert re.search(r"cancelled job 3001 \(carol\) at .*: IDLE_GPUS since .*, \$8\.00 spent, saved \$8\.00", body)
