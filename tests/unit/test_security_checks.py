"""Security properties, each against hostile input:

- the digest (HTML page and mail text part) escapes every field a user controls,
  and nothing in it is read as a template;
- every SQL statement binds its values: no value reaches SQL text (a static scan
  of piqc_slurm/, every remaining dynamic SQL text allow-listed with its reason);
- no shell is ever built: no shell=True / os.system / os.popen / string commands
  (a static scan), programs get job-derived values as argv items, and the hook
  fragment slurmd runs as root (epilog/piqc-hook.sh) executes none of a job's
  fields and logs one line per event.
"""

from __future__ import annotations

import ast
import contextlib
import html
import json
import os
import re
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "piqc_slurm"
HOOK = REPO / "epilog" / "piqc-hook.sh"

# One string with every kind of hostile text: markup, an attribute break-out, the HTML
# metacharacters, and jinja's and a shell's template syntax.
XSS = "<script>alert(1)</script>\"><img src=x onerror=alert(1)>&'{{7*7}}${7*7}"


def hostile(tag: str) -> str:
    """A field's hostile value: a tag saying which field it is, then XSS."""
    return f"{tag}{XSS}"


# --------------------------------------------------------------------------------------------
# 1. The digest escapes every user-controlled field
# --------------------------------------------------------------------------------------------

class Tags(HTMLParser):
    """Every start tag and its attributes, and the text (entities decoded), as a browser parses it."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, attrs))

    handle_startendtag = handle_starttag

    def handle_data(self, data):
        self.text.append(data)


def parse(page: str) -> Tags:
    p = Tags()
    p.feed(page)
    p.close()
    return p


def injected(page: str) -> list[str]:
    """What in an HTML page would run: script/img/iframe/object tags, on* handlers, javascript: URLs."""
    bad = []
    for tag, attrs in parse(page).tags:
        if tag in ("script", "img", "iframe", "object", "embed", "base", "form"):
            bad.append(f"<{tag}>")
        for name, value in attrs:
            if name.startswith("on"):
                bad.append(f"<{tag} {name}=>")
            if name in ("href", "src", "xlink:href", "action") and (value or "").strip().lower().startswith(
                    ("javascript:", "data:text/html")):
                bad.append(f"<{tag} {name}={value}>")
    return bad


def test_the_checker_sees_injection_and_passes_escaped_text():
    """The page checks below can fail: they catch each hostile piece left unescaped."""
    raw = f"<p>{XSS}</p>"
    assert injected(raw) == ["<script>", "<img>", "<img onerror=>"]
    assert injected('<a href="javascript:alert(1)">x</a>') == ["<a href=javascript:alert(1)>"]
    escaped = f'<p title="{html.escape(XSS)}">{html.escape(XSS)}</p>'
    assert injected(escaped) == []
    assert "".join(parse(escaped).text) == XSS


def _scenario(path: Path) -> Path:
    """Four runs of one job (a recurring job, with IDLE_GPUS findings: 2 of 4 GPUs loaded) on a node
    whose GPU type and partition are hostile, by a hostile user/account/name/comment; one run without
    sampler data, so the node is listed under coverage."""
    jobs = [{"job_id": 100 + i, "name": hostile("N"), "user": hostile("U"), "account": hostile("A"),
             "partition": hostile("P"), "comment": hostile("C"), "node": "gpu01", "gpu_indices": [0, 1, 2, 3],
             "submit": f"2026-11-2{i}T01:00:00", "start": f"2026-11-2{i}T01:00:00",
             "end": f"2026-11-2{i}T03:00:00", "state": "COMPLETED", "sampled": i != 0,
             "gpu_load": [{"gpus": [0, 1], "util": 80, "mem_gib": 10, "process": True}]} for i in range(4)]
    doc = {"cluster": "sec", "prices": {}, "jobs": jobs,
           "nodes": [{"name": "gpu01", "gpu_type": hostile("T"), "gpus": 4, "partition": hostile("P")}]}
    path.write_text(json.dumps(doc))
    return path


def _me() -> str:
    import pwd

    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


@pytest.fixture(scope="module")
def hostile_digest(tmp_path_factory) -> dict:
    """The digest of a store whose every text field is hostile, rendered to a file and mailed (real
    SMTP server on 127.0.0.1): the page, and the message as received."""
    from smtpserver import serve
    from test_digest import run

    d = tmp_path_factory.mktemp("xss")
    db = d / "s.db"
    run(db, "simulate", "-q", "--scenario", str(_scenario(d / "sc.json")))
    run(db, "analyze", "-q", "-S", "2026-11-19", "-E", "2026-11-25")
    run(db, "gaps", "--no-events", "-S", "2026-11-20", "-E", "2026-11-24")
    # what a scenario cannot hold (its node names are host names): the node, the work dir, as slurmd and
    # sacct would have recorded them
    with sqlite3.connect(db) as c:
        c.execute("UPDATE jobs SET nodelist = ?, work_dir = ?", (hostile("H"), hostile("W")))
        c.execute("UPDATE node_summaries SET node = ?", (hostile("H"),))
        c.execute("UPDATE idle_gaps SET node = ?", (hostile("H"),))
        c.execute("UPDATE node_gpus SET node = ?", (hostile("H"),))
        assert c.execute("SELECT COUNT(*) FROM findings").fetchone()[0] > 0
        assert c.execute("SELECT COUNT(*) FROM idle_gaps").fetchone()[0] > 0
    with serve() as server:
        cfg = d / "piqc.toml"
        # admin = whoever runs the tests (sacct and costs then see every job, as root does)
        cfg.write_text(f'[access]\nadmin_users = [{json.dumps(_me())}]\n'
                       f'[mail]\nhost = "127.0.0.1"\nport = {server.port}\nstarttls = false\n'
                       'from = "piqc@example.org"\n')
        out = d / "d.html"
        run(db, "digest", "-S", "2026-11-20", "-E", "2026-11-24", "-o", str(out), "--mail-to",
            "admins@example.org", config=cfg)
    (msg,) = server.messages()
    return {"page": out.read_text(encoding="utf-8"), "msg": msg, "file": out.read_bytes(), "db": db}


def test_the_digest_page_runs_nothing_a_user_wrote(hostile_digest):
    page = hostile_digest["page"]
    assert injected(page) == []
    assert "<script" not in page.lower() and "<img" not in page.lower()
    # onerror= appears only inside escaped text: after "&lt;img src=x " (the page's own escaping)
    assert page.count("onerror=") == page.count("&lt;img src=x onerror=") > 0
    # no bare & (each one starts an entity): the "&" of the input was escaped everywhere
    assert re.findall(r"&(?!(?:[A-Za-z][A-Za-z0-9]*|#[0-9]+|#x[0-9A-Fa-f]+);).{0,20}", page) == []
    # the page forbids scripts and requests of its own
    assert "default-src 'none'" in page


def test_the_digest_shows_the_hostile_fields_as_text(hostile_digest):
    """Each field the digest displays is there, read back by an HTML parser as exactly the text given:
    escaped, not dropped, and `{{7*7}}` / `${7*7}` not evaluated (no 49 in their place)."""
    text = "".join(parse(hostile_digest["page"]).text)
    shown = {tag: text.count(hostile(tag)) for tag in "NUATH"}   # name, user, account, GPU type, node
    assert all(n > 0 for n in shown.values()), shown
    assert text.count("{{7*7}}") == text.count("${7*7}") == text.count(XSS) >= sum(shown.values())
    for tag in "PCW":   # partition, comment and work dir: not shown by the digest, and never unescaped
        assert hostile(tag).split("<", 1)[0] + "<script" not in hostile_digest["page"]


def test_the_mail_parts_are_the_escaped_page_and_plain_text(hostile_digest):
    msg = hostile_digest["msg"]
    plain, page = msg.get_payload()
    assert page.get_content_type() == "text/html" and page.get_payload(decode=True) == hostile_digest["file"]
    assert plain.get_content_type() == "text/plain"      # a mail client shows it as text, never as HTML
    body = plain.get_content()
    # the text part's per-finding and per-account lines: the values verbatim (no template evaluation)
    for tag in "UA":
        assert hostile(tag) in body, tag
    assert body.count("{{7*7}}") == body.count("${7*7}") == body.count(XSS) > 0
    # nothing from the data reached a header
    assert sorted(set(msg.keys())) == ["Content-Type", "Date", "From", "MIME-Version", "Message-ID", "Subject",
                                       "To"]
    assert all("<" not in msg[h] for h in ("Subject", "From", "To"))


def test_mail_refuses_a_header_with_a_line_break():
    from piqc_slurm.errors import MailError
    from piqc_slurm.mail import compose

    for subject, to in (("x\r\nBcc: victim@example.org", ["a@example.org"]),
                        ("digest", ["a@example.org\nBcc: victim@example.org"])):
        with pytest.raises(MailError, match="line break"):
            compose(subject, "<p>x</p>", "x", "piqc@example.org", to)


def test_notify_takes_no_hostile_user_name_for_a_file_or_an_address():
    from piqc_slurm.notify import USER_NAME

    for bad in (hostile("U"), "a\nBcc: x@example.org", "../etc/passwd", "; touch /tmp/pwned", "$(id)", "`id`",
                ".hidden", "a b", "a/b", "a@b"):
        assert not USER_NAME.match(bad), bad
    for good in ("alice", "bob.smith", "svc_train-01", "x+y"):
        assert USER_NAME.match(good), good


# --------------------------------------------------------------------------------------------
# 2. Every SQL statement binds its parameters
# --------------------------------------------------------------------------------------------

# Calls that run (or wrap) SQL text: SQLAlchemy text(), DB-API execute*, psycopg copy, the query
# Reader's batches/all/copy_csv, pandas read_sql.
SQL_SINKS = frozenset({"text", "execute", "executemany", "executescript", "exec_driver_sql", "copy", "copy_csv",
                       "batches", "all", "read_sql", "read_sql_query"})
# A dynamic string that looks like SQL, wherever it is built (a builder that returns its text to a sink).
# (SQL's words in capitals, as this code writes them: a message in English has none of them.)
SQL_WORDS = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|WHERE|CREATE|DROP|ALTER|COPY|VALUES|GRANT|REVOKE|TRUNCATE|"
                       r"PRAGMA|JOIN|ON CONFLICT|search_path|AND|OR|IN|NOT|BETWEEN|IS NULL|LIKE|ORDER BY|GROUP BY|"
                       r"LIMIT|COALESCE|EXISTS|CASE WHEN)\b")

# Every dynamic SQL text in piqc_slurm/, read and found to carry no value: file:function -> why.
SQL_ALLOWED = {
    "piqc_slurm/analysis.py:<module>":
        "_SQLITE_INSERT, _PG_COPY: the column names of the fixed tuple _FINDING_COLS and one ? per column",
    "piqc_slurm/analysis.py:_insert":
        "runs _SQLITE_INSERT (executemany binds each row) and _PG_COPY (rows go through COPY write_row)",
    "piqc_slurm/costs.py:<module>":
        "_SQL: constant column names and the finding codes of the constant CATEGORY_FIELDS",
    "piqc_slurm/costs.py:load_jobs":
        "{extra} is ' AND j.\"user\" IN (:u0, ...)' placeholders (or ' AND 1=0'); the user names are bound",
    "piqc_slurm/gaps.py:load":
        "{cl} is ':c0, :c1, ...' placeholders from _in(); the cluster names are bound",
    "piqc_slurm/query/gpu.py:load_gpu_stats":
        "{ids} is ':r0, :r1, ...' placeholders; the job ids are bound; {cols}: names of the constant "
        "_STAT_COLUMNS only (a column asked for that is not one of them is left out)",
    "piqc_slurm/query/gpu.py:StoredFindings.for_jobs":
        "{ids} is ':r0, :r1, ...' placeholders; the job ids are bound",
    "piqc_slurm/query/select.py:_state_clause":
        "quoted column names (_q of constants), :S/:E and the state's :placeholder from _Params.add",
    "piqc_slurm/query/select.py:where":
        "quoted column names and the :placeholders _Params.add/many return for every -M -u -A -r -j value "
        "(test_sacct_binds_every_selection_value runs them)",
    "piqc_slurm/query/select.py:build_query":
        "column names of the constant COLUMNS, ORDER BY constants and NO_VAL; the conditions from where()",
    "piqc_slurm/query/store.py:Reader.copy_csv":
        "COPY ({q}) TO STDOUT: q is the caller's SQL with :name rewritten to %(name)s; psycopg binds the values",
    "piqc_slurm/store/jobs.py:<module>":
        "_PG_STAGE, _PG_MERGE: column names of the model's COLUMNS, KEY and UPDATABLE",
    "piqc_slurm/store/jobs.py:_pg_copy_upsert":
        "runs _PG_STAGE/_PG_MERGE and COPY with _COLS_SQL (constant names); the rows go through write_row",
}


def _call_name(call: ast.Call) -> str | None:
    f = call.func
    return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None


def _assigned(scope: ast.AST, name: str) -> list[ast.expr]:
    """The values assigned to `name` anywhere in `scope` (a function or the module)."""
    out: list[ast.expr] = []
    for n in ast.walk(scope):
        if isinstance(n, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in n.targets):
            out.append(n.value)
        elif isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name) and n.target.id == name and n.value:
            out.append(n.value)
        elif isinstance(n, ast.AugAssign) and isinstance(n.target, ast.Name) and n.target.id == name:
            out.append(ast.BinOp(ast.Constant(""), ast.Add(), n.value))
    return out


def _dynamic(e: ast.expr, scopes: list[ast.AST], depth: int = 0) -> str | None:
    """Why the text of `e` is built at run time (f-string, %-format, .format(), concatenation of a
    non-constant), following names to their assignments; None for constant text or a value passed in."""
    if depth > 6:
        return None
    if isinstance(e, ast.JoinedStr):
        return "f-string" if any(isinstance(v, ast.FormattedValue) for v in e.values) else None
    if isinstance(e, ast.BinOp) and isinstance(e.op, ast.Mod):
        return "%-format"
    if isinstance(e, ast.BinOp) and isinstance(e.op, ast.Add):
        for side in (e.left, e.right):
            if isinstance(side, ast.Constant):
                continue
            why = _dynamic(side, scopes, depth + 1)
            if why:
                return why
            if not (isinstance(side, ast.Name) and _constant_name(side.id, scopes, depth)):
                return "concatenation"
        return None
    if isinstance(e, ast.Call) and isinstance(e.func, ast.Attribute) and e.func.attr in ("format", "join"):
        return f".{e.func.attr}()"
    if isinstance(e, ast.IfExp):
        return _dynamic(e.body, scopes, depth + 1) or _dynamic(e.orelse, scopes, depth + 1)
    if isinstance(e, ast.Name):
        for scope in scopes:
            values = _assigned(scope, e.id)
            if values:
                for v in values:
                    why = _dynamic(v, scopes, depth + 1)
                    if why:
                        return f"{e.id} = {why}"
                return None
    return None


def _constant_name(name: str, scopes: list[ast.AST], depth: int) -> bool:
    for scope in scopes:
        values = _assigned(scope, name)
        if values:
            return all(isinstance(v, ast.Constant) or (isinstance(v, ast.BinOp) and not _dynamic(v, scopes, depth + 1))
                       for v in values)
    return False


def _constants(e: ast.AST) -> str:
    return " ".join(n.value for n in ast.walk(e) if isinstance(n, ast.Constant) and isinstance(n.value, str))


class _SqlScan(ast.NodeVisitor):
    def __init__(self, rel: str, tree: ast.Module):
        self.rel, self.tree, self.stack, self.hits = rel, tree, [], []

    def _key(self) -> str:
        return f"{self.rel}:{'.'.join(s.name for s in self.stack) or '<module>'}"

    def _scopes(self) -> list[ast.AST]:
        return [s for s in reversed(self.stack) if not isinstance(s, ast.ClassDef)] + [self.tree]

    def _nested(self, node):
        self.stack.append(node)
        self.generic_visit(node)
        self.stack.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _nested

    def visit_Call(self, node: ast.Call):
        name = _call_name(node)
        sql = node.args[0] if node.args else next(
            (k.value for k in node.keywords if k.arg in ("sql", "statement", "query")), None)
        if name in SQL_SINKS and sql is not None:
            why = _dynamic(sql, self._scopes())
            if why:
                self.hits.append((self._key(), node.lineno, f"{name}() of {why}: {ast.unparse(sql)[:80]}"))
        elif (isinstance(node.func, ast.Attribute) and node.func.attr == "format"
              and SQL_WORDS.search(_constants(node.func.value))):
            self.hits.append((self._key(), node.lineno, f"SQL .format(): {ast.unparse(node)[:80]}"))
        self.generic_visit(node)

    def visit_JoinedStr(self, node: ast.JoinedStr):
        if any(isinstance(v, ast.FormattedValue) for v in node.values) and SQL_WORDS.search(_constants(node)):
            self.hits.append((self._key(), node.lineno, f"SQL f-string: {ast.unparse(node)[:80]}"))
        self.generic_visit(node)

    def visit_BinOp(self, node: ast.BinOp):
        if (isinstance(node.op, (ast.Mod, ast.Add)) and SQL_WORDS.search(_constants(node))
                and _dynamic(node, self._scopes())):
            self.hits.append((self._key(), node.lineno, f"SQL {type(node.op).__name__}: {ast.unparse(node)[:80]}"))
        self.generic_visit(node)


def sql_hits(source: str, rel: str) -> list[tuple[str, int, str]]:
    """(file:function, line, what) of every SQL text built at run time in `source`."""
    tree = ast.parse(source)
    scan = _SqlScan(rel, tree)
    scan.visit(tree)
    return scan.hits


def package_files() -> list[tuple[str, str]]:
    return [(str(p.relative_to(REPO)), p.read_text(encoding="utf-8")) for p in sorted(PACKAGE.rglob("*.py"))]


def test_the_sql_scan_catches_values_in_sql_text():
    src = '''
from sqlalchemy import text
_COLS = ", ".join(f'"{c}"' for c in ("a", "b"))
SAFE = "SELECT " + "1"

def fstring(conn, user):
    return conn.execute(text(f"SELECT * FROM jobs WHERE user = '{user}'"))

def percent(cur, user):
    cur.execute("SELECT * FROM jobs WHERE user = '%s'" % user)

def fmt(reader, acct):
    return reader.all("SELECT 1 FROM jobs WHERE account = '{}'".format(acct), {})

def concat(conn, name):
    sql = "SELECT * FROM jobs WHERE name = '" + name + "'"
    conn.exec_driver_sql(sql)

def builder(cluster):
    return f"DELETE FROM jobs WHERE cluster = '{cluster}'"

def bound(conn, user):
    conn.execute(text("SELECT * FROM jobs WHERE user = :u"), {"u": user})
    conn.execute(text(SAFE))
    conn.execute("SELECT 1 WHERE 1 = ?", (user,))
'''
    got = {(key, line) for key, line, _what in sql_hits(src, "x.py")}
    # each hostile form, by its line in the source above (the sink and the text it runs); nothing in
    # bound() nor the constant module-level texts
    assert got == {("x.py:fstring", 7), ("x.py:percent", 10), ("x.py:fmt", 13), ("x.py:concat", 16),
                   ("x.py:concat", 17), ("x.py:builder", 20)}


def test_the_query_text_holds_no_selection_value():
    """sacct's selection (-M -u -A -r -j -s and a non-admin's own name) reaches the SQL only as
    :placeholders: no hostile value is in the text, every one is in the parameters."""
    from piqc_slurm.query.jobids import JobSel
    from piqc_slurm.query.select import Selection, build_query

    bad = "x') OR 1=1; DROP TABLE jobs; --" + XSS
    sel = Selection(start=1_800_000_000, end=1_800_086_400, clusters=[bad + "M"], users=[bad + "U"], uids=[7],
                    owner=bad + "O", accounts=[bad + "A"], partitions=[bad + "R"],
                    jobs=[JobSel(1), JobSel(2, task=3), JobSel(2, task=4), JobSel(5, het=1)],
                    states=["PENDING", "RUNNING", "SUSPENDED", "COMPLETED", "RESV_DEL_HOLD"])
    sql, params = build_query(sel)
    assert "DROP" not in sql and "alert" not in sql and "1=1" not in sql
    values = {v for v in params.values() if isinstance(v, str)}
    assert {bad + "M", bad + "U", bad + "O", (bad + "A").lower(), (bad + "R").lower(), "RESV_DEL_HOLD"} <= values


def test_sacct_binds_every_selection_value(hostile_digest):
    """Against the hostile store: the hostile user, account and partition select their jobs (100-103 of
    the scenario) exactly, and classic injections select nothing."""
    from test_digest import ENV, run

    db = hostile_digest["db"]
    base = ("sacct", "-S", "2026-11-19", "-E", "2026-11-25", "-P", "-n", "-o", "JobIDRaw,User")
    got = run(db, *base, "-M", "sec", "-u", hostile("U"), "-A", hostile("A"), "-r", hostile("P")).stdout
    assert got.splitlines() == [f"{j}|{hostile('U')}" for j in (100, 101, 102, 103)]
    for opt in ("-u", "-A", "-r", "-M"):
        for inj in ("x' OR '1'='1", "x') OR 1=1 --", 'x" OR "1"="1'):
            r = subprocess.run([sys.executable, "-m", "piqc_slurm", "--config", str(db.parent / "piqc.toml"),
                                "--db", f"sqlite:///{db}", *base, opt, inj], capture_output=True, text=True, env=ENV)
            assert r.stdout == "", (opt, inj)
            # -u: a name neither this host nor the store knows is refused as sacct does
            # -A: nothing listed, and a note that no stored job has that account
            expected = {"-u": (2, f"piqc-slurm: Invalid user id: {inj}\n"),
                        "-A": (0, f"piqc-slurm sacct: no job in the store has account {inj.lower()!r}\n")}
            assert (r.returncode, r.stderr) == expected.get(opt, (0, "")), (opt, inj)


def test_costs_and_gaps_bind_user_and_cluster_names(hostile_digest):
    """The other readers that take names (costs' non-admin user list, gaps' clusters): a hostile name
    finds its own rows, an injection none."""
    from piqc_slurm import costs, gaps
    from piqc_slurm.query.gpu import load_price_book
    from piqc_slurm.query.store import Reader

    since, until = 1795000000, 1796000000   # 2026-11-19 .. 2026-11-30 (UTC), around the scenario's four days
    r = Reader(f"sqlite:///{hostile_digest['db']}")
    try:
        assert sorted(j["id"] for j in costs.load_jobs(r, since, until, users=[hostile("U")])) == [1, 2, 3, 4]
        book = load_price_book(r, None)
        nodes, held, _waiting = gaps.load(r, ["sec"], since, until, book)
        assert [n.name for n in nodes] == [hostile("H")] and len(held) == 4
        for inj in ("x' OR '1'='1", "x') OR 1=1 --", hostile("U")[:-1]):
            assert costs.load_jobs(r, since, until, users=[inj]) == []
            assert gaps.load(r, [inj], since, until, book) == ([], [], [])
    finally:
        r.close()


def test_every_sql_statement_binds_its_values():
    found: dict[str, list[str]] = {}
    for rel, source in package_files():
        for key, line, what in sql_hits(source, rel):
            found.setdefault(key, []).append(f"{rel}:{line}: {what}")
    new = {k: v for k, v in found.items() if k not in SQL_ALLOWED}
    assert not new, ("SQL text built at run time: bind the values (:name / ?), or, if only constant "
                     "identifiers reach it, add it to SQL_ALLOWED with the reason:\n"
                     + "\n".join(x for v in new.values() for x in v))
    stale = sorted(set(SQL_ALLOWED) - set(found))
    assert not stale, f"SQL_ALLOWED entries with nothing left to allow (remove them): {stale}"


# --------------------------------------------------------------------------------------------
# 3. No shell is built from job fields
# --------------------------------------------------------------------------------------------

_SPAWN = {("subprocess", n) for n in ("run", "call", "check_call", "check_output", "Popen")} | {
    ("asyncio", "create_subprocess_exec")}
_SHELL_CALLS = {("os", "system"), ("os", "popen"), ("subprocess", "getoutput"), ("subprocess", "getstatusoutput"),
                ("commands", "getoutput"), ("commands", "getstatusoutput"), ("asyncio", "create_subprocess_shell"),
                ("os", "execl"), ("os", "execlp"), ("os", "spawnl"), ("os", "spawnlp")}


def _resolver(tree: ast.Module):
    """Call -> (module, function) through the file's imports (`import subprocess as sp`,
    `from os import system`), or None."""
    modules: dict[str, str] = {}
    names: dict[str, tuple[str, str]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                modules[a.asname or a.name] = a.name
        elif isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                names[a.asname or a.name] = (node.module, a.name)

    def resolve(f: ast.expr) -> tuple[str, str] | None:
        if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
            return modules.get(f.value.id, f.value.id), f.attr
        if isinstance(f, ast.Name):
            return names.get(f.id)
        return None

    return resolve


def shell_hits(source: str, rel: str) -> list[str]:
    """Every shell, and every program started with a command string, in `source`."""
    tree = ast.parse(source)
    resolve = _resolver(tree)
    hits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(a.name == "commands" for a in node.names):
            hits.append(f"{rel}:{node.lineno}: imports commands")
        if not isinstance(node, ast.Call):
            continue
        for k in node.keywords:
            if k.arg == "shell" and not (isinstance(k.value, ast.Constant) and k.value.value is False):
                hits.append(f"{rel}:{node.lineno}: shell={ast.unparse(k.value)}")
        name = resolve(node.func)
        if name in _SHELL_CALLS:
            hits.append(f"{rel}:{node.lineno}: {'.'.join(name)}()")
        if (name in _SPAWN or _call_name(node) == "run_command") and node.args:
            cmd = node.args[0]
            if (isinstance(cmd, ast.Constant | ast.JoinedStr)
                    or (isinstance(cmd, ast.BinOp) and not isinstance(cmd.left, ast.List | ast.Tuple))
                    or (isinstance(cmd, ast.Call) and _call_name(cmd) in ("format", "join"))):
                hits.append(f"{rel}:{node.lineno}: a command string: {ast.unparse(cmd)[:80]}")
    return hits


def test_the_shell_scan_catches_each_kind():
    src = '''
import os, subprocess
import subprocess as sp
import commands
from os import system as run_it
from subprocess import Popen
def f(name):
    os.system("echo " + name)
    run_it("echo " + name)
    os.popen(f"ls {name}")
    subprocess.run(f"sacct -j {name}", shell=True)
    Popen("sacct -j 1")
    sp.check_output("ls %s" % name)
    subprocess.getoutput("id")
    run_command(" ".join(["sacct", name]), {}, 1, "")
    subprocess.run(["sacct", "-j", name], shell=False)
    Popen(["sacct"] + [name])
    os.execv("/bin/x", ["/bin/x", name])
'''
    got = [int(h.split(":")[1]) for h in shell_hits(src, "x.py")]
    # line numbers of the source above: everything but the last three calls
    assert sorted(got) == [4, 8, 9, 10, 11, 11, 12, 13, 14, 15], shell_hits(src, "x.py")


def test_no_shell_anywhere_in_the_package():
    hits = [h for rel, source in package_files() for h in shell_hits(source, rel)]
    assert hits == [], "\n".join(hits)


def test_mail_and_notify_start_no_program():
    """Mail goes through smtplib ([mail] host:port), never a sendmail command: neither module can start one."""
    for name in ("mail.py", "notify.py"):
        tree = ast.parse((PACKAGE / name).read_text(encoding="utf-8"))
        imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not imported & {"subprocess", "pty", "commands", "asyncio"}, name
        resolve = _resolver(tree)
        calls = {resolve(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
        assert not {c for c in calls if c and c[0] == "os" and c[1].startswith(("system", "popen", "exec", "spawn",
                                                                                 "fork"))}, name


def test_slurm_clients_get_each_value_as_one_argv_item(tmp_path):
    """The one place a Slurm client is started (slurm/run.py) passes argv as a list: a value with shell
    syntax arrives as one argument, runs nothing (a real child, which prints its argv)."""
    from piqc_slurm.slurm.run import run_command

    items = [f"; /usr/bin/touch {tmp_path}/pwned1", f"$(/usr/bin/touch {tmp_path}/pwned2)",
             f"`/usr/bin/touch {tmp_path}/pwned3`", f"x\n/usr/bin/touch {tmp_path}/pwned4", "*", "a b"]
    out = run_command([sys.executable, "-c", "import json, sys; print(json.dumps(sys.argv[1:]))", *items],
                      {"PATH": "/usr/bin:/bin"}, 30, "")
    assert json.loads(out) == items
    assert list(tmp_path.iterdir()) == []


def test_job_derived_sacct_arguments_are_checked():
    """Job ids and cluster names given to ingest and gaps (which reach sacct/sacctmgr's argv) must be
    plain ids and names; shell syntax is refused before any program starts."""
    from piqc_slurm.slurm.argv import sacct_argv
    from piqc_slurm.slurm.run import sacctmgr_events

    for bad in ("1;id", "$(id)", "1 2", "`id`", "1\n2", "-o/etc/passwd"):
        with pytest.raises(ValueError, match="bad job id"):
            sacct_argv(None, None, jobs=[bad])
        with pytest.raises(ValueError, match="bad cluster name"):
            sacct_argv(1_800_000_000, 1_800_000_100, clusters=[bad])
        with pytest.raises(ValueError, match="bad cluster name"):
            sacctmgr_events(1_800_000_000, 1_800_000_100, [bad], {})
    argv = sacct_argv(None, None, jobs=[1234, "1234_5", "7+1"], clusters=["piqc"])
    assert argv[-4:] == ["-M", "piqc", "-j", "1234,1234_5,7+1"]


# --- the hook fragment slurmd runs as root --------------------------------------------------

HOSTILE_VALUES = {
    "semicolon": "1; /usr/bin/touch {d}/pwned-semicolon",
    "substitution": "$(/usr/bin/touch {d}/pwned-substitution)",
    "backticks": "`/usr/bin/touch {d}/pwned-backticks`",
    "newline": "1\n/usr/bin/touch {d}/pwned-newline",
    "quotes": "1'; /usr/bin/touch {d}/pwned-quote; '\"; /usr/bin/touch {d}/pwned-dquote; \"",
    "pipe": "1 | /usr/bin/touch {d}/pwned-pipe && /usr/bin/touch {d}/pwned-and",
    "expansion": "${{IFS}}/usr/bin/touch${{IFS}}{d}/pwned-ifs $HOME * ?",
}
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ (prolog|epilog) (Begin|End) job=")


def _fake_piqc(d: Path) -> Path:
    """A stand-in for piqc-slurm that records its argv and environment, one JSON line per run."""
    fake = d / "bin" / "piqc-slurm"
    fake.parent.mkdir()
    fake.write_text(f"#!{sys.executable}\nimport json, os, sys\n"
                    f"with open({str(d / 'calls.jsonl')!r}, 'a') as f:\n"
                    "    f.write(json.dumps({'argv': sys.argv[1:], 'env': dict(os.environ)}) + '\\n')\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    return fake


def _hook(d: Path, env_file: Path) -> Path:
    """The fragment as the test cluster installs it (docker-slurm/cluster.sh render_wrapper): its site
    settings file is the one line changed (the real one, /etc/default/piqc-slurm, is the system's)."""
    src = HOOK.read_text()
    assert src.count("\nPIQC_HOOK_ENV=/etc/default/piqc-slurm\n") == 1
    hook = d / "50-piqc.sh"
    hook.write_text(src.replace("\nPIQC_HOOK_ENV=/etc/default/piqc-slurm\n", f"\nPIQC_HOOK_ENV={env_file}\n"))
    return hook


def _wait_end(log: Path, verb: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = log.read_text().splitlines() if log.exists() else []
        ends = [ln for ln in lines if f"{verb} End job=" in ln]
        if ends:
            return ends[-1]
        time.sleep(0.02)
    raise AssertionError(f"no '{verb} End' line in {log}")


def _run_hook(d: Path, verb: str, job_env: dict[str, str]) -> tuple[list[dict], list[str]]:
    fake = _fake_piqc(d) if not (d / "bin").exists() else d / "bin" / "piqc-slurm"
    env_file = d / "piqc-env"
    env_file.write_text(f"export PIQC_BIN={fake}\nexport PIQC_HOOK_LOG={d}/hook.log\nexport PIQC_TIMEOUT=30\n")
    # slurmd's hook environment: no PATH
    env = {"SLURM_SCRIPT_CONTEXT": f"{verb}_slurmd", "SLURMD_NODENAME": "vm", **job_env}
    r = subprocess.run(["/bin/sh", str(_hook(d, env_file))], env=env, cwd=d, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and r.stdout == "" and r.stderr == "", r
    _wait_end(d / "hook.log", verb)  # the Prolog's piqc-slurm runs detached: its End line comes later
    calls = [json.loads(ln) for ln in (d / "calls.jsonl").read_text().splitlines()] \
        if (d / "calls.jsonl").exists() else []
    return calls, (d / "hook.log").read_text().splitlines()


def _pwned(d: Path) -> list[str]:
    return sorted(str(p.relative_to(d)) for p in d.rglob("*pwned*"))


@pytest.mark.parametrize("verb", ["prolog", "epilog"])
@pytest.mark.parametrize("kind", list(HOSTILE_VALUES))
def test_the_hook_runs_no_job_field(tmp_path, verb, kind):
    """Hostile job name and comment (a user's), and job id: nothing runs, piqc-slurm gets the verb
    alone as its argv, and the fields reach it only as the environment slurmd gave."""
    value = HOSTILE_VALUES[kind].format(d=tmp_path)
    job_env = {"SLURM_JOB_ID": value, "SLURM_JOB_NAME": value, "SLURM_JOB_COMMENT": value,
               "SLURM_JOB_USER": value, "SLURM_JOB_ACCOUNT": value, "SLURM_JOB_PARTITION": value}
    calls, _log = _run_hook(tmp_path, verb, job_env)
    assert _pwned(tmp_path) == []
    assert [c["argv"] for c in calls] == [[verb]]
    assert all(calls[0]["env"][k] == v for k, v in job_env.items())


@pytest.mark.parametrize("kind", list(HOSTILE_VALUES))
def test_the_hook_log_never_holds_a_users_text(tmp_path, kind):
    """The job's name and comment (a user's text) never reach the hook log or syslog line; each event
    is one line."""
    value = HOSTILE_VALUES[kind].format(d=tmp_path)
    _calls, log = _run_hook(tmp_path, "epilog", {"SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": value,
                                                 "SLURM_JOB_COMMENT": value})
    assert _pwned(tmp_path) == []
    assert [ln.split("Z ", 1)[1] for ln in log] == ["epilog Begin job=4242 node=vm",
                                                    "epilog End job=4242 rc=0 exit=0"]


@pytest.mark.parametrize("kind", list(HOSTILE_VALUES))
def test_the_hook_logs_one_line_per_event_whatever_the_job_id(tmp_path, kind):
    value = HOSTILE_VALUES[kind].format(d=tmp_path)
    _calls, log = _run_hook(tmp_path, "prolog", {"SLURM_JOB_ID": value})
    assert _pwned(tmp_path) == []
    assert len(log) == 2 and all(LOG_LINE.match(ln) for ln in log), log
    assert log[0].endswith(" node=vm") and log[1].endswith(" rc=0 exit=0")


def test_the_hook_ignores_a_piqc_bin_from_the_environment(tmp_path):
    """PIQC_BIN comes from the fragment and its site settings file only: one in the job's environment
    (were a user able to put it there) runs nothing."""
    if os.path.exists("/etc/default/piqc-slurm") or os.path.exists("/opt/piqc/venv/bin/piqc-slurm"):
        pytest.skip("this machine has a piqc-slurm hook installed: the unmodified fragment would run it")
    fake = _fake_piqc(tmp_path)
    r = subprocess.run(["/bin/sh", str(HOOK)], capture_output=True, text=True, timeout=60, cwd=tmp_path,
                       env={"SLURM_SCRIPT_CONTEXT": "prolog_slurmd", "SLURM_JOB_ID": "7", "PIQC_BIN": str(fake),
                            "PIQC_HOOK_LOG": str(tmp_path / "hook.log")})
    assert r.returncode == 0
    assert not (tmp_path / "calls.jsonl").exists()
    # the log file named in the environment is ignored too (settings come from the file only)
    assert not (tmp_path / "hook.log").exists()


def test_the_prolog_wrapper_returns_before_piqc_slurm_prolog_ends(tmp_path):
    """The job waits for the Prolog: the wrapper starts piqc-slurm prolog detached (its own session, so
    slurmd's kill of the hook's process group cannot reach it) and returns; End comes with its rc."""
    fake = tmp_path / "bin" / "piqc-slurm"
    fake.parent.mkdir()
    fake.write_text(f"#!{sys.executable}\nimport json, os, sys, time\ntime.sleep(1.5)\n"
                    f"with open({str(tmp_path / 'calls.jsonl')!r}, 'a') as f:\n"
                    "    f.write(json.dumps({'argv': sys.argv[1:], 'sid': os.getsid(0),\n"
                    "                        'env': dict(os.environ)}) + '\\n')\n"
                    "sys.exit(3)\n")
    fake.chmod(0o755)
    env_file = tmp_path / "piqc-env"
    env_file.write_text(f"export PIQC_BIN={fake}\nexport PIQC_HOOK_LOG={tmp_path}/hook.log\n")
    t0 = time.monotonic()
    r = subprocess.run(["/bin/sh", str(_hook(tmp_path, env_file))], capture_output=True, text=True, timeout=60,
                       cwd=tmp_path, env={"SLURM_SCRIPT_CONTEXT": "prolog_slurmd", "SLURM_JOB_ID": "4242"})
    returned = time.monotonic() - t0
    assert r.returncode == 0 and r.stdout == "" and r.stderr == "", r
    assert returned < 1.0, returned
    end = _wait_end(tmp_path / "hook.log", "prolog")
    assert end.endswith("prolog End job=4242 rc=3 (failed; see syslog) exit=0"), end
    [call] = [json.loads(ln) for ln in (tmp_path / "calls.jsonl").read_text().splitlines()]
    assert call["argv"] == ["prolog"] and call["env"]["SLURM_JOB_ID"] == "4242"
    assert call["sid"] != os.getsid(0)
    log = [ln.split("Z ", 1)[1] for ln in (tmp_path / "hook.log").read_text().splitlines()]
    assert log == ["prolog Begin job=4242 node=?", "prolog End job=4242 rc=3 (failed; see syslog) exit=0"]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: a user's stand-in must be told from root's")
def test_a_users_process_never_counts_as_a_prolog_in_flight():
    """A user can start a process with the detached Prolog's argv; only root's delay an Epilog."""
    from piqc_slurm.hooks.inflight import prologs_in_flight

    argv = ["/bin/sh", "-c", "sleep 5; :", "50-piqc.sh", "--piqc-detached-prolog", "4242"]
    users = subprocess.Popen(argv, preexec_fn=lambda: os.setuid(65534))  # noqa: PLW1509 - a test's child
    roots = subprocess.Popen(argv)
    other = subprocess.Popen([*argv[:-1], "42420"])
    try:
        deadline = time.monotonic() + 5
        while (roots.pid not in prologs_in_flight(4242) or other.pid not in prologs_in_flight(42420)) \
                and time.monotonic() < deadline:  # until both have exec'd
            time.sleep(0.01)
        time.sleep(0.1)  # the user's too (it setuid's first)
        assert prologs_in_flight(4242) == [roots.pid]
        assert prologs_in_flight(42420) == [other.pid]
        assert prologs_in_flight(424) == []
    finally:
        for p in (users, roots, other):
            p.kill()
            p.wait()


def test_the_detached_prolog_survives_slurmds_kill_of_the_hooks_process_group(tmp_path):
    """slurmd kills the hook's process group as soon as the hook exits (SLURM-FACTS.md): the wrapper
    returns only once its detached copy is in a session of its own, so that kill reaches nothing.
    (Without the new session the kill takes piqc-slurm prolog and this fails; the narrower race of
    `setsid -f`, whose child may not have left the group yet, is seldom provoked here.)"""
    fake = _fake_piqc(tmp_path)
    env_file = tmp_path / "piqc-env"
    env_file.write_text(f"export PIQC_BIN={fake}\nexport PIQC_HOOK_LOG={tmp_path}/hook.log\n")
    hook = _hook(tmp_path, env_file)
    for n in range(10):  # a race: try it more than once
        proc = subprocess.Popen(["/bin/sh", str(hook)], cwd=tmp_path, process_group=0,
                                env={"SLURM_SCRIPT_CONTEXT": "prolog_slurmd", "SLURM_JOB_ID": str(4200 + n)},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert proc.wait(timeout=30) == 0
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # what slurmd's run_command does next
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        calls = (tmp_path / "calls.jsonl").read_text().splitlines() if (tmp_path / "calls.jsonl").exists() else []
        ends = [ln for ln in (tmp_path / "hook.log").read_text().splitlines() if "prolog End" in ln]
        if len(calls) == 10 and len(ends) == 10:
            break
        time.sleep(0.05)
    assert len(calls) == 10 and len(ends) == 10, (calls, ends)
    assert all(ln.endswith("rc=0 exit=0") for ln in ends)
