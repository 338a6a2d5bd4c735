#!/usr/bin/env python3
"""A synthetic week of a 100-GPU Slurm cluster, as a piqc-slurm scenario.

    python3 examples/cluster-week/generate.py --seed 7 > week.json
    piqc-slurm simulate --scenario week.json

Stdlib only and deterministic: the same seed gives the same bytes (random.Random
with an integer seed, no clock, no hash-ordered iteration). The mix is shaped by
the published figures in /work/shared/ANALYSIS-NOTES.md ("Published waste");
README.md names the figure behind each knob below.

Jobs are placed by a small first-come scheduler: in order of eligible time, each
job goes to the node of its partition where enough GPUs are free earliest, on
the GPUs free soonest there. A GPU's free time only moves forward, so no two
jobs ever hold one GPU at the same time. A job that could not start before the
week ends stays PENDING.
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import random
import sys
from datetime import datetime, timedelta

WEEK_START = datetime(2026, 11, 16)  # a Monday, UTC (scenario times without zone are UTC)
DAYS = 7
WEEK = DAYS * 86400
FIRST_JOB_ID = 400001

PRICES = {"h100": 4.00, "a100": 2.79, "l40s": 1.50}  # USD per GPU-hour, ANALYSIS-NOTES "Prices"
GPU_MEM_GIB = {"h100": 79.6, "a100": 79.6, "l40s": 44.5}  # what NVML shows of 80 GB / 48 GB
GPM_TYPES = {"h100"}  # sm/tensor/dram activity only where NVML GPM exists (Hopper)

# (name prefix, GPU type, nodes, GPUs per node): 8x8 + 4x8 + 1x4 = 100 GPUs
NODE_GROUPS = (("h100-", "h100", 8, 8), ("a100-", "a100", 4, 8), ("l40s-", "l40s", 1, 4))

ACCOUNTS = {
    "nlp": ("alice", "bob", "hana", "kim", "liam"),
    "vision": ("dana", "gita", "omar", "pia"),
    "search": ("carol", "ivan", "quinn", "ravi"),
    "robotics": ("erin", "frank", "sara", "tom"),
    "speech": ("uma", "victor", "wen"),
    "bio": ("xena", "yusuf", "zoe", "nico"),
}

# ---- knobs (README.md: which published figure each one follows) ----
AD_HOC_JOBS = 2000
PARTITION_WEIGHTS = {"h100": 0.60, "a100": 0.36, "l40s": 0.04}
GPU_COUNT_WEIGHTS = {1: 0.50, 2: 0.15, 4: 0.20, 8: 0.15}
DURATION_MEDIAN_MIN, DURATION_SIGMA = 70.0, 1.1  # lognormal, clamped to 5 min .. 24 h
DELAYED_ELIGIBLE_SHARE = 0.15  # dependencies / --begin: eligible after submit
# Philly (ATC'19): 30.7% of jobs killed or unsuccessful
OUTCOME_WEIGHTS = {"COMPLETED": 0.67, "FAILED": 0.13, "CANCELLED": 0.09, "TIMEOUT": 0.06,
                   "OUT_OF_MEMORY": 0.02, "NODE_FAIL": 0.015, "PREEMPTED": 0.015}
REQUEUE_SHARE = 0.5  # NODE_FAIL / PREEMPTED runs requeued under the same job id
# NVIDIA fleet taxonomy: occupied-but-inefficient most frequent, occupied-but-unused moderate;
# Perlmutter: 55% of jobs on 80 GB GPUs peak at <= 50% of HBM
SHAPE_WEIGHTS = {"healthy": 0.45, "under_batched": 0.22, "idle_gpus": 0.12, "wrong_tier": 0.15,
                 "input_bound": 0.06}
IDLE_CONTEXT_SHARE = 0.5  # idle GPUs that still list a process with a bare context
NO_SAMPLES_SHARE = 0.015  # GPU jobs without sampler data ("sampled": false)
PENDING_CANCEL_SHARE = 0.01  # cancelled while pending: never started, cost 0
CPU_JOB_SHARE = 0.02  # gpu_indices []: CPU work on GPU nodes

# Recurring named jobs: (name, user, account, partition, GPUs, first minute of day, minutes, shape, every)
# `every` is minutes between submissions (1440 nightly, 60 hourly, 10080 weekly).
RECURRING = (
    ("nightly-classify", "alice", "nlp", "h100", 1, 120, 120, "wrong_tier", 1440),
    ("rag-answer-nightly", "carol", "search", "h100", 1, 60, 180, "batch_of_one", 1440),
    ("nightly-train-a", "gita", "vision", "h100", 8, 60, 60, "healthy", 1440),
    ("eval-suite", "hana", "nlp", "a100", 4, 360, 90, "healthy", 1440),
    ("hourly-embed", "ivan", "search", "l40s", 1, 5, 20, "under_batched", 60),
    ("asr-batch", "uma", "speech", "a100", 2, 1320, 150, "input_bound", 1440),
    ("finetune-weekly", "bob", "nlp", "h100", 8, 2 * 1440 + 480, 360, "idle_gpus", 10080),
)
RECURRING_COMPLETED_SHARE = 0.85  # production jobs fail less than ad-hoc ones
# RUNTIME_REGRESSION: eval-suite's last two nights take this much longer
REGRESSION_JOB, REGRESSION_FROM_DAY, REGRESSION_FACTOR = "eval-suite", 5, 1.5


def nodes() -> list[dict]:
    return [{"name": f"{prefix}{i:02d}", "gpu_type": gpu_type, "gpus": gpus, "partition": gpu_type}
            for prefix, gpu_type, count, gpus in NODE_GROUPS for i in range(1, count + 1)]


def pick(rng: random.Random, weights: dict) -> object:
    keys = list(weights)
    return rng.choices(keys, weights=[weights[k] for k in keys])[0]


def iso(seconds: float) -> str:
    return (WEEK_START + timedelta(seconds=int(seconds))).isoformat()


def r2(x: float) -> float:
    return round(x, 2)


def arrival(rng: random.Random) -> int:
    """A submit time in the week, busier by day (09-19) and on weekdays."""
    while True:
        t = rng.randrange(WEEK)
        hour, day = (t % 86400) // 3600, t // 86400
        p = (1.0 if 9 <= hour < 19 else 0.35) * (0.5 if day >= 5 else 1.0)
        if rng.random() < p:
            return t


def timelimit_min(minutes: float) -> int:
    """What a user asks for: 1.5x the run, rounded up to the half hour, 30 min .. 48 h."""
    return int(min(2880, max(30, math.ceil(minutes * 1.5 / 30) * 30)))


def load_for(rng: random.Random, shape: str, gpu_type: str, gpus: list[int], state: str) -> tuple[list, float]:
    """gpu_load entries and the job's cpu_util for a shape."""
    mem_max = GPU_MEM_GIB[gpu_type]
    gpm = gpu_type in GPM_TYPES
    cpu_util = r2(rng.uniform(0.15, 0.6))

    def entry(on: list[int], util, jitter: float, mem: float, mem_util: float, power: float,
              sm: float, tensor: float, dram: float, process: bool = True) -> dict:
        e = {"gpus": on, "util": util, "util_jitter": jitter, "mem_gib": r2(min(mem, mem_max)),
             "mem_util": r2(mem_util), "process": process, "power_frac": r2(power)}
        if gpm:
            e.update(sm_active=r2(sm), tensor_active=r2(tensor), dram_active=r2(dram))
        return e

    def busy(on: list[int]) -> dict:
        return entry(on, round(rng.uniform(70, 97)), rng.choice([3, 5, 8]), rng.uniform(0.2, 0.95) * mem_max,
                     rng.uniform(35, 75), rng.uniform(0.6, 0.9), rng.uniform(0.6, 0.9), rng.uniform(0.3, 0.7),
                     rng.uniform(0.3, 0.7))

    if shape == "idle_gpus" and len(gpus) < 2:
        shape = "healthy"
    if shape == "wrong_tier" and gpu_type == "l40s":
        shape = "under_batched"
    if shape == "healthy":
        loads = [busy(gpus)]
    elif shape == "idle_gpus":
        used = rng.randint(1, len(gpus) - 1)
        loads = [busy(gpus[:used])]
        if rng.random() < IDLE_CONTEXT_SHARE:
            loads.append(entry(gpus[used:], 0, 0, 0.5, 0, 0.1, 0, 0, 0))
    elif shape == "batch_of_one":
        loads = [entry(gpus, 60, 5, 8, 12, 0.25, 0.20, 0.05, 0.15)]
    elif shape == "under_batched":
        if rng.random() < 0.6:  # LLM decode: high util.gpu, low power and tensor activity; vLLM-style 90% memory
            mem = 0.9 * mem_max if rng.random() < 0.5 else rng.uniform(4, 16)
            loads = [entry(gpus, round(rng.uniform(55, 75)), 5, mem, rng.uniform(8, 20), rng.uniform(0.2, 0.35),
                           rng.uniform(0.15, 0.3), rng.uniform(0.02, 0.08), rng.uniform(0.1, 0.2))]
        else:  # small batch: low util, most memory free
            loads = [entry(gpus, round(rng.uniform(10, 30)), 5, rng.uniform(0.05, 0.2) * mem_max,
                           rng.uniform(5, 15), rng.uniform(0.15, 0.3), rng.uniform(0.08, 0.25),
                           rng.uniform(0.02, 0.1), rng.uniform(0.05, 0.15))]
    elif shape == "wrong_tier":
        loads = [entry(gpus, round(rng.uniform(20, 45)), 5, rng.uniform(4, 20), rng.uniform(5, 15),
                       rng.uniform(0.15, 0.3), rng.uniform(0.1, 0.3), rng.uniform(0.02, 0.06),
                       rng.uniform(0.03, 0.1))]
    elif shape == "input_bound":
        phases = [{"seconds": rng.choice([60, 90, 120]), "util": round(rng.uniform(90, 98))},
                  {"seconds": rng.choice([180, 300, 420]), "util": round(rng.uniform(0, 5))}]
        loads = [entry(gpus, phases, 3, rng.uniform(0.2, 0.5) * mem_max, rng.uniform(10, 30),
                       rng.uniform(0.25, 0.4), rng.uniform(0.2, 0.35), rng.uniform(0.1, 0.25),
                       rng.uniform(0.1, 0.25))]
        cpu_util = r2(rng.uniform(0.9, 1.0))
    else:
        raise ValueError(shape)
    if state == "OUT_OF_MEMORY":
        for e in loads:
            if e["util"] != 0:
                e["mem_gib"] = r2(mem_max - rng.uniform(0, 0.4))
    return loads, cpu_util


def outcome(rng: random.Random, planned_s: int, limit_s: int) -> tuple[str, int, str, int | None]:
    """(state, seconds it ran, exit code, exit signal)."""
    state = pick(rng, OUTCOME_WEIGHTS)
    if state == "COMPLETED":
        return state, planned_s, "0:0", None
    if state == "TIMEOUT":
        return state, limit_s, "0:0", None
    share = {"FAILED": (0.02, 0.6), "CANCELLED": (0.2, 1.0), "OUT_OF_MEMORY": (0.01, 0.3),
             "NODE_FAIL": (0.1, 0.9), "PREEMPTED": (0.1, 0.9)}[state]
    ran = max(60, int(planned_s * rng.uniform(*share)))
    if state == "FAILED":
        return state, ran, rng.choices(["1:0", "2:0", "127:0"], weights=[8, 1, 1])[0], None
    if state == "CANCELLED":
        return state, ran, "0:15", 15
    if state == "OUT_OF_MEMORY":
        return state, ran, "0:125", None
    return state, ran, "0:0", None


class Scheduler:
    """Per-GPU free times; a job takes the earliest moment enough GPUs of one node are free."""

    def __init__(self, node_list: list[dict]) -> None:
        self.free = {n["name"]: [0] * n["gpus"] for n in node_list}
        self.by_partition: dict[str, list[str]] = {}
        for n in node_list:
            self.by_partition.setdefault(n["partition"], []).append(n["name"])

    def place(self, partition: str, gpus: int, eligible: int) -> tuple[str, list[int], int]:
        best = None
        for name in self.by_partition[partition]:
            free = self.free[name]
            if gpus > len(free):
                continue
            order = sorted(range(len(free)), key=lambda g: (free[g], g))[:gpus]
            start = max([eligible] + [free[g] for g in order])
            if best is None or start < best[2]:
                best = (name, sorted(order), start)
        assert best is not None, f"no node of {partition} has {gpus} GPUs"
        return best

    def hold(self, node: str, gpus: list[int], end: int) -> None:
        for g in gpus:
            self.free[node][g] = end


def specs(rng: random.Random) -> list[dict]:
    """Every submission of the week, before placement."""
    out: list[dict] = []
    for name, user, account, partition, gpus, first, minutes, shape, every in RECURRING:
        for t in range(first * 60, WEEK, every * 60):
            run = minutes
            if name == REGRESSION_JOB and t // 86400 >= REGRESSION_FROM_DAY:
                run = minutes * REGRESSION_FACTOR
            out.append({"name": name, "user": user, "account": account, "partition": partition, "gpus": gpus,
                        "submit": t - 300 if t >= 300 else t, "delay": 300 if t >= 300 else 0,
                        "planned_s": int(run * 60), "limit_min": timelimit_min(minutes), "shape": shape,
                        "recurring": True})
    users = [(u, a) for a, us in ACCOUNTS.items() for u in us]
    for _ in range(AD_HOC_JOBS):
        user, account = rng.choice(users)
        partition = pick(rng, PARTITION_WEIGHTS)
        gpus = pick(rng, GPU_COUNT_WEIGHTS)
        if partition == "l40s":
            gpus = min(gpus, 4)
        minutes = min(1440.0, max(5.0, rng.lognormvariate(math.log(DURATION_MEDIAN_MIN), DURATION_SIGMA)))
        submit = arrival(rng)
        delay = rng.randint(60, 7200) if rng.random() < DELAYED_ELIGIBLE_SHARE else 0
        kind = rng.random()
        shape = pick(rng, SHAPE_WEIGHTS)
        name = f"{rng.choice(['train', 'finetune', 'infer', 'eval', 'sweep', 'embed', 'debug'])}-" \
               f"{rng.choice(['llm', 'vit', 'asr', 'rec', 'seg', 'ppo', 'gnn'])}"
        spec = {"name": name, "user": user, "account": account, "partition": partition, "gpus": gpus,
                "submit": submit, "delay": delay, "planned_s": int(minutes * 60),
                "limit_min": timelimit_min(minutes), "shape": shape, "recurring": False}
        if kind < PENDING_CANCEL_SHARE:
            spec["cancel_after_s"] = rng.randint(300, 6 * 3600)
        elif kind < PENDING_CANCEL_SHARE + CPU_JOB_SHARE:
            spec["gpus"] = 0
            spec["cpus"] = rng.choice([16, 32, 64])
        out.append(spec)
    out.sort(key=lambda s: (s["submit"], s["name"], s["user"]))
    for i, spec in enumerate(out):
        spec["job_id"] = FIRST_JOB_ID + i
    return out


def generate(seed: int = 7) -> dict:
    rng = random.Random(seed)
    node_list = nodes()
    gpu_type = {n["name"]: n["gpu_type"] for n in node_list}
    sched = Scheduler(node_list)
    queue = [(s["submit"] + s["delay"], s["job_id"], 0, s) for s in specs(rng)]
    heapq.heapify(queue)
    jobs: list[dict] = []
    while queue:
        eligible, job_id, restarts, spec = heapq.heappop(queue)
        submit = spec["submit"] if restarts == 0 else eligible
        job = {"job_id": job_id, "name": spec["name"], "user": spec["user"], "account": spec["account"],
               "partition": spec["partition"]}
        limit_s = spec["limit_min"] * 60
        if "cancel_after_s" in spec:
            jobs.append({**job, "req_gpus": spec["gpus"], "submit": iso(submit), "eligible": iso(eligible),
                         "end": iso(submit + spec["cancel_after_s"]), "state": "CANCELLED", "exit_code": "0:0",
                         "cpus": spec["gpus"] * 8, "timelimit": spec["limit_min"]})
            continue
        if spec["gpus"] == 0:  # CPU job: on a node of its partition, holds no GPU
            node = rng.choice(sched.by_partition[spec["partition"]])
            start = eligible + rng.randint(0, 120)
            jobs.append({**job, "node": node, "gpu_indices": [], "submit": iso(submit), "eligible": iso(eligible),
                         "start": iso(start), "end": iso(start + spec["planned_s"]), "state": "COMPLETED",
                         "exit_code": "0:0", "cpus": spec["cpus"], "cpu_util": r2(rng.uniform(0.7, 0.98)),
                         "timelimit": spec["limit_min"]})
            continue
        node, gpus, start = sched.place(spec["partition"], spec["gpus"], eligible)
        if start >= WEEK:
            jobs.append({**job, "req_gpus": spec["gpus"], "submit": iso(submit), "eligible": iso(eligible),
                         "state": "PENDING", "cpus": spec["gpus"] * 8, "timelimit": spec["limit_min"]})
            continue
        if restarts or spec["name"] == REGRESSION_JOB:
            state, ran, exit_code, signal = "COMPLETED", spec["planned_s"], "0:0", None
        elif spec["recurring"] and rng.random() < RECURRING_COMPLETED_SHARE:
            state, ran, exit_code, signal = "COMPLETED", spec["planned_s"], "0:0", None
        else:
            state, ran, exit_code, signal = outcome(rng, spec["planned_s"], limit_s)
        ran = min(ran, limit_s)
        if ran == limit_s and state == "COMPLETED":
            state = "TIMEOUT"
        end = start + ran
        sched.hold(node, gpus, end)
        loads, cpu_util = load_for(rng, spec["shape"], gpu_type[node], gpus, state)
        record = {**job, "node": node, "gpu_indices": gpus, "submit": iso(submit), "eligible": iso(eligible),
                  "start": iso(start), "end": iso(end), "state": state, "exit_code": exit_code}
        if signal is not None:
            record["exit_signal"] = signal
        record.update(cpus=len(gpus) * rng.choice([4, 8, 12, 16]), cpu_util=cpu_util, timelimit=spec["limit_min"])
        if restarts:
            record["restarts"] = restarts
        if rng.random() < NO_SAMPLES_SHARE:
            record["sampled"] = False
        else:
            record["gpu_load"] = loads
        jobs.append(record)
        if state in ("NODE_FAIL", "PREEMPTED") and restarts == 0 and rng.random() < REQUEUE_SHARE:
            heapq.heappush(queue, (end + 60, job_id, 1, spec))
    jobs.sort(key=lambda j: (j["submit"], j["job_id"]))
    return {"cluster": "week", "prices": dict(PRICES), "nodes": node_list, "jobs": jobs}


def dumps(doc: dict) -> str:
    """One node / one job a line: diffable, greppable."""
    head = "".join(f"  {json.dumps(k)}: {json.dumps(doc[k])},\n" for k in ("cluster", "prices"))

    def rows(key: str) -> str:
        return ",\n".join("    " + json.dumps(x) for x in doc[key])

    return f'{{\n{head}  "nodes": [\n{rows("nodes")}\n  ],\n  "jobs": [\n{rows("jobs")}\n  ]\n}}\n'


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write a synthetic 100-GPU cluster week (scenario JSON) to stdout.")
    parser.add_argument("--seed", type=int, default=7, help="random seed (default 7; README's totals are for 7)")
    args = parser.parse_args(argv)
    sys.stdout.write(dumps(generate(args.seed)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
