#!/usr/bin/env python3
"""Hook cost: the slurmd hooks as slurmd runs them, against the same wrapper calling /bin/true.

    .venv/bin/python bench/run.py --only hooks [--quick]

The shipped wrapper (epilog/piqc-hook.sh, rendered as an install renders it:
its env file names PIQC_BIN and PIQC_CONFIG) with a bare hook environment (no
PATH, no HOME), timed from fork to exit, median and p99 over 50 runs (quick:
10 of the Prolog, 5 of each Epilog case). The reference is the same wrapper with PIQC_BIN=/bin/true: the shell,
logger and timeout the wrapper costs whatever it calls, so a ratio says what
piqc-slurm adds.

1. Prolog of a 4-GPU job: it starts a real sampler over the fake NVML driver
   (each is stopped by the Epilog that follows). The wrapper runs piqc-slurm
   prolog detached, so the job waits for the wrapper alone; the time until
   the sampler's pid file appears (the Prolog's work, off the job's path) is
   reported beside it.
2. Epilog of that job: the live sampler stopped, flushed and its summary
   delivered (shared-spool, the default delivery).
3. Epilog of a finished 8-GPU job that ran 1 minute, 1 day and 7 days
   (synthetic run dirs: the sampler's final checkpoint of aggregates fed a
   sample every 60 s, and a timeline of one 60 s bin per GPU: 80,640 lines for
   7 days): delivered by shared-spool (a rename), by push into a local SQLite
   store and by push into PostgreSQL (epilog.push_jitter 0: the jitter is a
   deliberate wait, not cost). Flat is the target: the Epilog must not cost
   more for a longer job. A push runs detached (epilog.push_detached): the
   wrapper returns once the summary is spooled, and the time until the
   summary is in the store (moved to delivered/) is reported beside it; the
   next run starts only after it.
Needs root (the hooks run as root), make and a C compiler (the fake driver).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from common import PIQC, REPO, Ctx, Skip, env_utc, pg_database, postgres_available, run, stats  # noqa: E402

sys.path.insert(0, str(REPO))
from piqc_slurm.hooks.spool import write_json_atomic  # noqa: E402
from piqc_slurm.sampler.aggregate import GpuAggregate, Sample  # noqa: E402
from piqc_slurm.sampler.checkpoint import build_checkpoint, write_checkpoint  # noqa: E402
from piqc_slurm.sampler.source import DeviceInfo  # noqa: E402

NGPU = 8
LENGTHS = (("1min", "1-minute", 60), ("1day", "1-day", 86400), ("7day", "7-day", 7 * 86400))


def setup(tmp: Path) -> dict[str, Path]:
    lib = tmp / "lib"
    lib.mkdir()
    subprocess.run(["make", "-s", "-C", str(REPO / "docker-slurm/fakenvml"), f"OUT={lib}"], check=True,
                   stdout=subprocess.DEVNULL)
    state = tmp / "state"
    state.mkdir()
    conf = tmp / "fakenvml.conf"
    conf.write_text(f"state_dir {state}\ndriver_version 550.54.15\n" + "".join(
        f"gpu {i} GPU-00000000-0000-4000-8000-{i:012d} 81559 700 NVIDIA H100 80GB HBM3\n" for i in range(NGPU)))
    out = tmp / "job.out"  # the job's output file, the user's: the Epilog appends its report as that user
    out.write_text("")
    os.chown(out, 65534, 65534)
    return {"lib": lib, "conf": conf, "out": out}


def wrapper(tmp: Path, name: str, files: dict[str, Path], piqc_bin: str, config: str) -> Path:
    """The shipped wrapper with its env file pointing at `piqc_bin` and `config`."""
    env_file = tmp / f"{name}.env"
    env_file.write_text(f"export PIQC_BIN={piqc_bin}\nexport PIQC_CONFIG={config}\n"
                        f"export FAKENVML_CONFIG={files['conf']}\nexport LD_LIBRARY_PATH={files['lib']}\n")
    path = tmp / f"{name}-50-piqc.sh"
    text = (REPO / "epilog/piqc-hook.sh").read_text()
    if "PIQC_HOOK_ENV=/etc/default/piqc-slurm" not in text:
        raise RuntimeError("epilog/piqc-hook.sh no longer sets PIQC_HOOK_ENV=/etc/default/piqc-slurm")
    path.write_text(text.replace("PIQC_HOOK_ENV=/etc/default/piqc-slurm", f"PIQC_HOOK_ENV={env_file}"))
    path.chmod(0o755)
    return path


def config(tmp: Path, name: str, delivery: str, db: str = "") -> Path:
    path = tmp / f"{name}.toml"
    path.write_text(f'cluster = "bench"\nspool_dir = "{tmp}/spool-{name}"\ndelivery = "{delivery}"\n'
                    f'shared_spool_dir = "{tmp}/shared-{name}"\ndb = {json.dumps(db)}\nsyslog = false\n'
                    "[epilog]\nflush_timeout = 5.0\npush_jitter = 0.0\n")
    return path


def hook_env(job: int, context: str, out: Path, gpus: str = "0,1,2,3") -> dict[str, str]:
    return {"SLURM_JOB_ID": str(job), "SLURM_JOBID": str(job), "SLURM_CLUSTER_NAME": "bench",
            "SLURMD_NODENAME": "vm", "SLURM_JOB_GPUS": gpus, "CUDA_VISIBLE_DEVICES": gpus,
            "SLURM_JOB_UID": "65534", "SLURM_JOB_GID": "65534", "SLURM_JOB_USER": "nobody",
            "SLURM_JOB_RESTART_COUNT": "0", "SLURM_JOB_PARTITION": "gpu", "SLURM_NODELIST": "vm",
            "SLURM_JOB_STDOUT": str(out), "SLURM_JOB_WORK_DIR": "/tmp", "SLURM_SCRIPT_CONTEXT": context,
            "SLURM_JOB_EXIT_CODE2": "0:0"}


def timed_ms(argv: list[str], env: dict[str, str]) -> float:
    return run(argv, env)[0] * 1000


def synthetic_run_dir(run: Path, seconds: int) -> None:
    """A run dir as the sampler leaves it after `seconds` of an 8-GPU job (job id filled in by place())."""
    run.mkdir(parents=True, mode=0o700)
    started = time.time() - seconds
    devs, aggs = [], []
    for i in range(NGPU):
        agg = GpuAggregate(interval=60.0, process_interval=60.0, active_util=5.0)
        for k in range(max(seconds // 60, 1)):
            t = started + 60 * (k + 1)
            agg.add(t, Sample(util=80 if i < 4 else 0, mem_util=40, mem_used_mib=40960 if i < 4 else 0,
                              power_w=500.0, energy_mj=int(500_000 * 60 * (k + 1)), sm_clock_mhz=1980,
                              temp_c=65))
            if k % 10 == 0:
                agg.add_processes(t, [1000 + i] if i < 4 else [], [1000 + i] if i < 4 else [])
        devs.append(DeviceInfo(minor=i, index=i, uuid=f"GPU-{i}", name="NVIDIA H100 80GB HBM3",
                               mem_total_mib=81559, power_limit_w=700.0))
        aggs.append(agg)
    bins = max(seconds // 60, 1)
    with open(run / "timeline.jsonl", "w") as fh:
        for k in range(bins):
            for i in range(NGPU):
                fh.write(json.dumps({"t": int(started) + 60 * k, "gpu": i, "util": 80.0, "mem_mib": 40960.0,
                                     "power_w": 500.0}) + "\n")
    doc = build_checkpoint(job_id=0, started=started, updated=time.time(), final=True, exit_reason="stopped",
                           nvml_ok=True, nvml_error=None, driver_version="550.54.15", interval=1.0,
                           gpus=list(zip(devs, aggs, strict=True)), timeline_bins=bins * NGPU)
    write_checkpoint(run / "checkpoint.json", doc)
    job_doc = {"job": {"cluster": "bench", "job_id": 0, "restart_count": 0, "node": "vm", "uid": 65534,
                       "gid": 65534, "user": "nobody", "account": "", "partition": "gpu",
                       "gpus": list(range(NGPU)), "nodelist": "vm", "stdout": None, "work_dir": "/tmp",
                       "array_job_id": None, "array_task_id": None, "exit_code": None, "spank_monitor": None,
                       "extra": {}},
               "monitor": "on", "monitor_note": "", "interval": 1.0, "prolog_time": started}
    write_json_atomic(run / "job.json", job_doc)


def place(template: Path, spool: Path, job: int) -> None:
    """A copy of a template run dir as job `job`'s, flushed to disk: a real 7-day job's timeline was
    written over days, so the Epilog's fsync must not pay for writing a fresh copy out (ext4 ordered)."""
    run = spool / "run" / f"bench.{job}.0.vm"
    shutil.copytree(template, run)
    os.chmod(run, 0o700)
    for name in ("checkpoint.json", "job.json"):
        p = run / name
        doc = json.loads(p.read_text())
        if "job" in doc and isinstance(doc["job"], dict):
            doc["job"]["job_id"] = job
        else:
            doc["job_id"] = job
        write_json_atomic(p, doc)
    os.sync()


def suite(ctx: Ctx) -> None:
    if os.geteuid() != 0:
        raise Skip("needs root (the hooks run as root)")
    if not shutil.which("make"):
        raise Skip("needs make and a C compiler (the fake NVML driver)")
    runs = 10 if ctx.quick else 50
    epi_runs = 5 if ctx.quick else 50
    with tempfile.TemporaryDirectory(prefix="piqc-bench-hooks-") as d, pg_or_none(ctx) as pg_url:
        tmp = Path(d)
        os.chmod(tmp, 0o755)
        files = setup(tmp)
        env = {}
        stores = {"spool": config(tmp, "spool", "shared-spool")}
        sqlite_url = f"sqlite:///{tmp}/push.db"
        run([PIQC, "--db", sqlite_url, "db", "init"], env_utc())
        stores["sqlite"] = config(tmp, "sqlite", "push", sqlite_url)
        if pg_url:
            run([PIQC, "--db", pg_url, "db", "init"], env_utc())
            stores["postgresql"] = config(tmp, "postgresql", "push", pg_url)
        true_w = wrapper(tmp, "true", files, "/bin/true", str(stores["spool"]))
        live_w = wrapper(tmp, "live", files, PIQC, str(stores["spool"]))
        out = files["out"]

        true_pro = [timed_ms([str(true_w)], {**env, **hook_env(1, "prolog_slurmd", out)}) for _ in range(runs)]
        true_epi = [timed_ms([str(true_w)], {**env, **hook_env(1, "epilog_slurmd", out)}) for _ in range(runs)]
        tp, te = stats(true_pro)["median"], stats(true_epi)["median"]
        ctx.add("true.prolog", "Prolog wrapper calling /bin/true (the reference)", tp, "ms", **_d(true_pro))
        ctx.add("true.epilog", "Epilog wrapper calling /bin/true (the reference)", te, "ms", **_d(true_epi))

        pro, epi_live, started = [], [], []
        for n in range(runs):
            job = 900000 + n
            pidfile = tmp / "spool-spool" / "run" / f"bench.{job}.0.vm" / "sampler.pid"
            t0 = time.perf_counter()
            pro.append(timed_ms([str(live_w)], hook_env(job, "prolog_slurmd", out)))
            while not pidfile.exists() and time.perf_counter() - t0 < 15:  # the detached Prolog's work
                time.sleep(0.001)
            started.append((time.perf_counter() - t0) * 1000)
            time.sleep(0.3)  # the sampler's first samples
            epi_live.append(timed_ms([str(live_w)], hook_env(job, "epilog_slurmd", out)))
        s = stats(pro)
        ctx.add("prolog", "Prolog wrapper, 4-GPU job, starts a sampler: median", s["median"], "ms",
                ratio=s["median"] / tp, ratio_to="/bin/true wrapper", gate=True, **_d(pro))
        ctx.add("prolog.ratio", "Prolog wrapper median / the same wrapper calling /bin/true", s["median"] / tp,
                "x", target=3.0)
        ctx.add("prolog.p99", "Prolog wrapper, 4-GPU job: p99", s["p99"], "ms", ratio=s["p99"] / tp,
                ratio_to="/bin/true wrapper")
        s = stats(started)
        ctx.add("prolog.sampler_started", "Prolog: the sampler started (off the job's path), after: median",
                s["median"], "ms", **_d(started))
        s = stats(epi_live)
        ctx.add("epilog.live", "Epilog wrapper, live 4-GPU sampler stopped, flushed, shared-spool: median",
                s["median"], "ms", ratio=s["median"] / te, ratio_to="/bin/true wrapper", gate=True, **_d(epi_live))
        ctx.add("epilog.live.p99", "Epilog wrapper, live sampler: p99", s["p99"], "ms", ratio=s["p99"] / te,
                ratio_to="/bin/true wrapper")

        templates = {}
        for key, _label, secs in LENGTHS:
            templates[key] = tmp / f"template-{key}"
            synthetic_run_dir(templates[key], secs)
        job = 800000
        for store, cfg in stores.items():
            w = wrapper(tmp, f"epi-{store}", files, PIQC, str(cfg))
            spool = tmp / f"spool-{store}"
            medians = {}
            for key, label, _secs in LENGTHS:
                xs, landed = [], []
                for _ in range(epi_runs):
                    job += 1
                    place(templates[key], spool, job)
                    t0 = time.perf_counter()
                    xs.append(timed_ms([str(w)], hook_env(job, "epilog_slurmd", out,
                                                          gpus=",".join(map(str, range(NGPU))))))
                    if store == "spool":  # what ingest would take away; the outbox must not grow
                        shutil.rmtree(tmp / "shared-spool", ignore_errors=True)
                    else:  # the push runs detached (epilog.push_detached): wait until it has landed
                        landed.append(wait_delivered(spool, job, t0))
                s = stats(xs)
                if landed:
                    ls = stats(landed)
                    ctx.add(f"epilog.{store}.{key}.delivered", f"Epilog push ({store}), {label} job: in the store "
                            "after (detached, off the node's path): median", ls["median"], "ms", **_d(landed))
                medians[key] = s["median"]
                how = {"spool": "shared-spool", "sqlite": "push to SQLite", "postgresql": "push to PostgreSQL"}[store]
                ctx.add(f"epilog.{store}.{key}", f"Epilog wrapper, finished 8-GPU {label} job, {how}: median",
                        s["median"], "ms", ratio=s["median"] / te, ratio_to="/bin/true wrapper", gate=True,
                        **_d(xs))
                ctx.add(f"epilog.{store}.{key}.p99", f"Epilog wrapper, {label} job, {how}: p99", s["p99"], "ms",
                        ratio=s["p99"] / te, ratio_to="/bin/true wrapper")
            ctx.add(f"epilog.{store}.flat", f"Epilog 7-day / 1-minute job median ({store}): flat is 1.0",
                    medians["7day"] / medians["1min"], "x", target=1.25)
            check_delivered(ctx, store, spool)


def wait_delivered(spool: Path, job: int, t0: float, timeout: float = 60.0) -> float:
    """Milliseconds from the Epilog's start until its detached push moved the summary to delivered/."""
    while not list((spool / "delivered").glob(f"bench.{job}.*.summary.json")):
        if time.perf_counter() - t0 > timeout:
            raise RuntimeError(f"hooks: job {job}'s push did not land within {timeout:g} s")
        time.sleep(0.002)
    return (time.perf_counter() - t0) * 1000


def check_delivered(ctx: Ctx, store: str, spool: Path) -> None:
    """Nothing may stay behind in the outbox: a failed delivery would make the figures meaningless."""
    outbox = spool / "outbox"
    left = [p.name for p in outbox.glob("*.summary.json")] if outbox.is_dir() else []
    if store != "spool" and left:
        raise RuntimeError(f"hooks: {len(left)} summaries left in {outbox} (push failed?): {left[:3]}")


def _d(xs: list[float]) -> dict:
    s = stats(xs)
    return {"p99": s["p99"], "n": s["n"], "min": s["min"], "max": s["max"]}


class pg_or_none:  # noqa: N801 - a context manager used like a function
    """A fresh PostgreSQL database, or None (noted) where there is none or --no-pg."""

    def __init__(self, ctx: Ctx) -> None:
        self.ctx, self.cm = ctx, None

    def __enter__(self) -> str | None:
        if not self.ctx.pg:
            return None
        why = postgres_available()
        if why:
            self.ctx.note(f"no PostgreSQL ({why}): SQLite only")
            return None
        self.cm = pg_database("piqc_bench_hooks")
        return self.cm.__enter__()

    def __exit__(self, *exc) -> None:
        if self.cm is not None:
            self.cm.__exit__(*exc)


if __name__ == "__main__":
    from run import main

    sys.exit(main(["--only", "hooks", *sys.argv[1:]]))
