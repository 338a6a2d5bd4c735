"""`piqc-slurm sacct` against the real sacct on the test cluster.

Fresh jobs (completed, `exit 3`, cancelled while running, a name with `|`
and `<b>`, a 2-GPU job that works one GPU at 80 %) are ingested with
`piqc-slurm ingest` (sacct + the shared spool the Epilog delivers to) into a
new SQLite store; then `piqc-slurm sacct` must print byte for byte what
`sacct -X` prints for the same jobs and fields, in -P, -p and table form,
and the GPU fields must come from the sampler's summary."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from jsoncompare import differences
from slurmtest import REPO

pytestmark = pytest.mark.slurm

SHARED = "JobID,JobIDRaw,JobName,User,Account,Partition,State,ExitCode,Submit,Start,End,Elapsed,NodeList"
LOAD = json.dumps([{"gpus": [0], "util": 80, "mem_gib": 10}])

# Until cli.py wires the command in, run it the way cli.py will: _build_cli() plus add_sacct_command.
_WIRED = r"""
import sys
from piqc_slurm import cli as C
_build = C._build_cli
def build():
    grp = _build()
    if "sacct" not in grp.commands:
        from piqc_slurm.query.command import add_sacct_command
        def load_config(ctx):
            from piqc_slurm import config
            return config.load(ctx.obj["config_path"], ctx.obj["db"])
        def store_url(ctx, cfg):
            from piqc_slurm import config
            return cfg["db"] or config.default_db_url()[0]
        add_sacct_command(grp, load_config, store_url)
    return grp
C._build_cli = build
C.main(sys.argv[1:])
"""


def piqc_argv(cluster) -> list[str]:
    exe = cluster.env.get("PIQC_BIN") or str(REPO / ".venv" / "bin" / "piqc-slurm")
    r = subprocess.run([exe, "sacct", "-e"], capture_output=True, text=True, env=cluster.root_env())
    if r.returncode == 0:
        return [exe]
    return [sys.executable, "-c", _WIRED]


@pytest.fixture(scope="module")
def jobs(cluster):
    """Submit the jobs, wait for them to be final everywhere; their ids by kind."""
    t0 = int(time.time())
    ids = {
        "completed": cluster.submit("true", "--gres=gpu:1", "-o", "/dev/null", name="q-completed"),
        "failed": cluster.submit("exit 3", "--gres=gpu:1", "-o", "/dev/null", name="q-failed"),
        "cancelled": cluster.submit("sleep 300", "--gres=gpu:2", "-o", "/dev/null", name="q-cancelled"),
        "weird": cluster.submit("true", "-o", "/dev/null", name="q|x<b>y</b>&z"),
        "gpu": cluster.submit(f"exec fakegpu-work --seconds 20 --load '{LOAD}'", "--gres=gpu:2", "-o", "/dev/null",
                              name="q-gpu"),
    }
    cluster.wait_running(ids["cancelled"])
    time.sleep(1)
    cluster.run(["scancel", str(ids["cancelled"])])
    states = {k: cluster.wait(j, timeout=180) for k, j in ids.items()}
    assert states == {"completed": "COMPLETED", "failed": "FAILED", "cancelled": "CANCELLED by 0",
                      "weird": "COMPLETED", "gpu": "COMPLETED"}, states
    cluster.wait_summary(ids["gpu"], timeout=60)
    # every line sacct has for them final (steps included), as ingest will read them
    deadline = time.monotonic() + 30
    idlist = ",".join(str(j) for j in ids.values())
    while time.monotonic() < deadline:
        out = cluster.run(["sacct", "-a", "-P", "-n", "-j", idlist, "-o", "State"]).stdout
        if "RUNNING" not in out and "PENDING" not in out and "COMPLETING" not in out:
            break
        time.sleep(0.5)
    return {"ids": ids, "t0": t0, "list": idlist}


@pytest.fixture(scope="module")
def store(cluster, jobs, tmp_path_factory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('query')}/piqc.db"
    spool = cluster.dir / "piqc" / "shared-spool"
    r = subprocess.run([*piqc_argv(cluster), "--db", url, "ingest", "--create-store",
                        "--since", f"uts{jobs['t0'] - 600}", "--spool", str(spool)],
                       capture_output=True, text=True, env=cluster.root_env())
    assert r.returncode == 0, r.stderr
    return url


def ours(cluster, store: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([*piqc_argv(cluster), "--db", store, "sacct", *args], capture_output=True,
                          env=cluster.root_env(**env))


def real(cluster, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["sacct", *args], capture_output=True, env=cluster.root_env(**env))


@pytest.mark.parametrize("args,env", [
    (["-P", "-o", SHARED], {}),
    (["-p", "-o", SHARED], {}),
    (["-o", SHARED], {}),
    ([], {}),
    (["-P", "-o", SHARED], {"TZ": "America/New_York"}),
    (["-P", "-o", SHARED + ",AllocCPUS,ElapsedRaw,Eligible,UID,QOS,AllocTRES"], {"SLURM_TIME_FORMAT": "%s"}),
    (["-o", "JobName%20,JobID%-8,State%-16,Start%12,NodeList%-4"], {}),
], ids=["P", "p", "table", "default-table", "P-new-york", "P-epoch-extra", "table-widths"])
@pytest.mark.parametrize("x", [["-X"], []], ids=["X", "steps"])
def test_byte_identical_to_sacct(cluster, jobs, store, args, env, x):
    want = real(cluster, *x, "-j", jobs["list"], *args, **env)
    got = ours(cluster, store, *x, "-j", jobs["list"], *args, **env)
    assert want.returncode == 0 and got.returncode == 0, got.stderr.decode()
    assert got.stdout == want.stdout, (f"sacct {' '.join(x)} -j {jobs['list']} {' '.join(args)} {env}\n--- sacct\n"
                                       f"{want.stdout.decode()}--- piqc-slurm\n{got.stdout.decode()}")


def test_the_names_and_states_are_the_hard_ones(cluster, jobs, store):
    got = ours(cluster, store, "-P", "-n", "-j", jobs["list"], "-o", "JobName,State,ExitCode").stdout.decode()
    assert "q|x<b>y</b>&z|COMPLETED|0:0" in got
    assert "q-failed|FAILED|3:0" in got and "q-cancelled|CANCELLED by 0|0:0" in got


def test_gpu_fields_come_from_the_sampler(cluster, jobs, store):
    job = jobs["ids"]["gpu"]
    got = ours(cluster, store, "-X", "-P", "-n", "-j", str(job), "-o",
               "JobID,AllocGPUs,GPUType,GPUsUsed,GPUUtilAvg,GPUMemPeak,GPUEnergy,CostUSD,WasteUSD")
    assert got.returncode == 0, got.stderr.decode()
    jid, alloc, gtype, used, util, mem, energy, cost, waste = got.stdout.decode().strip().split("|")
    assert (jid, alloc, gtype, used) == (str(job), "2", "h100", "1")
    assert 35.0 <= float(util) <= 41.0, util          # one GPU of two at ~80 %
    assert float(mem) == 10.0 and float(energy) > 0
    assert float(cost) > 0 and abs(float(waste) - float(cost) / 2) <= 0.011
    doc = json.loads(ours(cluster, store, "-j", str(job), "--json").stdout)
    (j,) = [d["piqc"] for d in doc["jobs"]]
    assert j["GPUsUsed"] == 1 and j["AllocGPUs"] == 2 and 35.0 <= j["GPUUtilAvg"] <= 41.0
    # a job with no GPUs has no sampler fields but a cost of 0
    cpu = ours(cluster, store, "-X", "-P", "-n", "-j", str(jobs["ids"]["weird"]), "-o", "AllocGPUs,GPUsUsed,CostUSD")
    assert cpu.stdout == b"0||0.00\n"


def test_json_is_real_sacct_json_and_a_script_for_it_reads_ours(cluster, jobs, store):
    """Real `sacct --json` of the live jobs against ours: same keys in the same order, same types,
    same values (CPU times to the millisecond, as the text keeps them); our figures only under
    "piqc"; and a script written for sacct's shape prints the same lines from both."""
    want = real(cluster, "-a", "--json", "-j", jobs["list"])
    got = ours(cluster, store, "--json", "-j", jobs["list"])
    assert want.returncode == 0 and got.returncode == 0, got.stderr.decode()
    real_doc, our_doc = json.loads(want.stdout), json.loads(got.stdout)
    assert len(our_doc["jobs"]) == 5 and all("piqc" in j for j in our_doc["jobs"])
    gpu = [j["piqc"] for j in our_doc["jobs"] if j["job_id"] == jobs["ids"]["gpu"]]
    assert gpu and gpu[0]["GPUsUsed"] == 1
    for j in our_doc["jobs"]:
        del j["piqc"]
    assert differences(real_doc, our_doc) == []
    script = [sys.executable, str(REPO / "tests" / "fixtures" / "steps" / "sacct_json_summary.py")]
    lines = [subprocess.run(script, input=doc, capture_output=True, check=True).stdout
             for doc in (want.stdout, json.dumps(our_doc).encode())]
    assert lines[0] == lines[1] and lines[0].count(b"\n") >= 10, lines


def test_window_query_lists_the_same_jobs_as_sacct(cluster, jobs, store):
    """The slurmdbd window rule on the ingested window (never-eligible jobs aside: there are none here)."""
    start = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(jobs["t0"] - 1))
    want = real(cluster, "-X", "-a", "-P", "-S", start, "-E", "now", "-o", "JobID,State")
    got = ours(cluster, store, "-X", "-a", "-P", "-S", start, "-E", "now", "-o", "JobID,State")
    ids = {str(j) for j in jobs["ids"].values()}
    pick = lambda out: [ln for ln in out.decode().splitlines() if ln.split("|")[0] in ids]  # noqa: E731
    assert pick(got.stdout) == pick(want.stdout) and len(pick(want.stdout)) == 5


def test_non_admin_sees_only_own_jobs(cluster, jobs, store, tmp_path):
    """As the unprivileged test user, on a copy of the store it may read."""
    path = Path(store.split(":///", 1)[1])
    copy = Path("/tmp") / f"piqc-query-{os.getpid()}.db"
    copy.write_bytes(path.read_bytes())
    os.chmod(copy, 0o644)
    try:
        argv = [*piqc_argv(cluster), "--db", f"sqlite:///{copy}", "sacct", "-X", "-P", "-n", "-j", jobs["list"],
                "-o", "JobID,User"]
        mine = subprocess.run(cluster.user_argv(argv), capture_output=True, text=True)
        assert mine.returncode == 0, mine.stderr
        assert len(mine.stdout.splitlines()) == 5 and all(ln.endswith(f"|{cluster.user}")
                                                          for ln in mine.stdout.splitlines())
        other = subprocess.run(cluster.user_argv([*argv, "-u", "root"]), capture_output=True, text=True)
        assert other.returncode == 0 and other.stdout == "", other.stderr
    finally:
        copy.unlink(missing_ok=True)


# --- the same recorded cases on PostgreSQL ---------------------------------------------------
FIXTURES = REPO / "tests" / "fixtures" / "query"


@pytest.fixture(scope="module")
def pg_store():
    """The recorded store (tests/fixtures/query/<version>/store.sacct.txt) in a fresh PostgreSQL database."""
    from pg import PostgresUnavailable, fresh_database

    from piqc_slurm.ingest import ingest
    from piqc_slurm.store import open_engine

    version = sorted(p for p in FIXTURES.iterdir() if p.is_dir())[-1]
    try:
        ctx = fresh_database("piqc_query")
        url = ctx.__enter__()
    except PostgresUnavailable as exc:
        pytest.skip(f"no PostgreSQL: {exc}")
    try:
        engine = open_engine(url)
        res = ingest(engine, cluster="piqc", sacct_file=str(version / "store.sacct.txt"), file_tz="UTC")
        engine.dispose()
        assert res.errors == []
        yield version, url
    finally:
        ctx.__exit__(None, None, None)


def test_recorded_cases_are_byte_identical_on_postgresql(pg_store, monkeypatch):
    import io

    from piqc_slurm.query.access import Caller
    from piqc_slurm.query.command import parse_args
    from piqc_slurm.query.run import Settings, run

    version, url = pg_store
    checked = 0
    try:
        for case in sorted(version.glob("*.txt")):
            if case.name == "store.sacct.txt":
                continue
            data = case.read_bytes()
            meta = {}
            while data.startswith(b"# "):
                line, _, data = data.partition(b"\n")
                key, _, value = line[2:].decode().partition(": ")
                meta[key] = value
            env = json.loads(meta["env"])
            monkeypatch.setenv("TZ", env.get("TZ", "UTC"))
            time.tzset()
            buf = io.BytesIO()
            run(parse_args(json.loads(meta["argv"])), url=url, settings=Settings(), caller=Caller(0, "root"),
                out=buf, env=env, now=int(meta["now"]), warn=lambda m: None)
            assert buf.getvalue() == data, f"{case.name}: {meta['command']}"
            checked += 1
    finally:
        monkeypatch.undo()
        time.tzset()
    assert checked >= 30
