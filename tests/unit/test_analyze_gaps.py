"""Idle GPU gaps (piqc_slurm/analyze/gaps.py): small cases computed by hand, the
sacctmgr event recordings (tests/fixtures/sacctmgr/22.05.8), and through the CLI
the gaps-2am example, whose README computes the expected row by hand."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from piqc_slurm.analyze import gaps as A
from piqc_slurm.config import Config, defaults
from piqc_slurm.slurm.parse import NodeEvent, parse_node_events
from piqc_slurm.usage.catalog import load_catalog
from piqc_slurm.usage.prices import PriceBook

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
FIX = REPO / "tests" / "fixtures" / "sacctmgr" / "22.05.8"
EXAMPLE = REPO / "examples" / "gaps-2am"
H = 3600
C = "c1"


def node(name="n1", gpus=1, gpu_type="h100", partitions=("gpu",), minors=None):
    minors = range(gpus) if minors is None else minors
    parts = frozenset(partitions)
    return A.Node(C, name, {m: gpu_type for m in minors}, parts, min(parts) if parts else None)


def held(job, start, end, nodes=("n1",), gpus=1, minors=None, gpu_type="h100"):
    """minors: {node: (minor, ...)}, as job_gpus gives them; None: the job has no rows."""
    return A.Held(C, job, start, end, tuple(nodes), gpus, ((gpus, gpu_type),), minors or {})


def waiting(job, eligible, gpus=1, start=None, end=None, partitions=("gpu",), gpu_type=None):
    return A.Waiting(C, job, gpus, eligible, start, end, frozenset(partitions) if partitions else None, gpu_type)


def totals(g: A.Gaps):
    """(idle, demand, down) GPU-hours over every unit."""
    return (sum(u.idle_s for u in g.units) / H, sum(u.demand_s for u in g.units) / H,
            sum(u.down_s for u in g.units) / H)


def book(prices=None) -> PriceBook:
    return PriceBook(Config(defaults()), load_catalog(), {C: {"type": prices or {"h100": 4.0, "a100-80": 2.0}}})


# --- one GPU ---------------------------------------------------------------------

def test_one_gpu_a_gap_without_demand():
    # held 1h-2h in a 3 h window: idle 0-1 and 2-3
    g = A.compute([node()], [held(1, 1 * H, 2 * H, minors={"n1": (0,)})], [], [], 0, 3 * H)
    assert totals(g) == (2.0, 0.0, 0.0)
    assert [(s.start, s.end, s.gpus, s.demand_gpu_s) for s in g.stretches] == [(0, H, 1, 0), (2 * H, 3 * H, 1, 0)]
    assert g.units[0].minor == 0  # job_gpus rows known: counted per GPU


def test_one_gpu_a_gap_with_demand_from_eligible_never_submit():
    # a job pending from 0.5 h (its Eligible; Submit earlier does not matter) to the window's end
    w = waiting(9, int(0.5 * H))
    g = A.compute([node()], [held(1, H, 2 * H, minors={"n1": (0,)})], [w], [], 0, 3 * H)
    idle, demand, _ = totals(g)
    assert (idle, demand) == (2.0, 1.5)  # 0.5-1 and 2-3
    assert [s.demand_gpu_s for s in g.stretches] == [H // 2, H]


def test_window_edges_clip_jobs_and_waits():
    # the job started before the window and ends inside it; the wait began before the window
    g = A.compute([node()], [held(1, -H, H, minors={"n1": (0,)})], [waiting(9, -5 * H)], [], 0, 2 * H)
    assert totals(g) == (1.0, 1.0, 0.0)
    assert [(s.start, s.end) for s in g.stretches] == [(H, 2 * H)]


def test_a_running_job_holds_to_the_window_end():
    g = A.compute([node()], [held(1, H, None, minors={"n1": (0,)})], [], [], 0, 3 * H)
    assert totals(g) == (1.0, 0.0, 0.0)


def test_demand_larger_than_the_idle_gpus_is_capped():
    # 2 GPUs, one held all window; a job asks for 4: demand is the one idle GPU
    g = A.compute([node(gpus=2)], [held(1, 0, 2 * H, minors={"n1": (0,)})], [waiting(9, 0, gpus=4)], [], 0, 2 * H)
    assert totals(g) == (2.0, 2.0, 0.0)
    # two waiting jobs share the idle GPUs, never more than there are
    g = A.compute([node(gpus=2)], [], [waiting(8, 0, gpus=1), waiting(9, 0, gpus=4)], [], 0, H)
    assert totals(g) == (2.0, 2.0, 0.0)


def test_a_job_that_started_within_the_grace_was_no_demand():
    # eligible at 0; started at 30 s (within the scheduler's 60 s cycle) vs at 400 s (it waited)
    quick = waiting(8, 0, start=30)
    slow = waiting(9, 0, start=400)
    assert totals(A.compute([node()], [], [quick], [], 0, H))[1] == 0.0
    assert A.compute([node()], [], [slow], [], 0, H).units[0].demand_s == 400
    assert A.compute([node()], [], [quick], [], 0, H, grace=0).units[0].demand_s == 30


def test_cancelled_while_pending_waits_until_its_end_held_jobs_never():
    cancelled = waiting(9, H, end=2 * H)  # no start: cancelled while pending at 2 h
    never = waiting(10, None)             # held / dependency: no Eligible
    g = A.compute([node()], [], [cancelled, never], [], 0, 3 * H)
    assert totals(g) == (3.0, 1.0, 0.0)


def test_a_drain_event_is_excluded_and_listed():
    # 2 GPUs, minor 0 held 0-1 h; the node drained 0.5-1.5 h; window 0-2 h
    ev = NodeEvent(C, "n1", int(0.5 * H), int(1.5 * H), "DRAIN", "piqc-test")
    w = waiting(9, 0, gpus=2)
    g = A.compute([node(gpus=2)], [held(1, 0, H, minors={"n1": (0,)})], [w], [ev], 0, 2 * H)
    idle, demand, down = totals(g)
    # minor 0: held 0-1, down 1-1.5, idle 1.5-2; minor 1: idle 0-0.5, down 0.5-1.5, idle 1.5-2
    assert (idle, down) == (1.5, 1.5)
    assert demand == 1.5  # demand only meets idle GPUs, never drained ones
    assert [(d.node, d.start, d.end, d.gpu_s) for d in g.downs] == [("n1", H // 2, 3 * H // 2, 3 * H // 2)]
    downs = [s for s in g.stretches if s.kind == "down"]
    assert {s.reason for s in downs} == {"DRAIN: piqc-test"}
    # an open event (End Unknown) lasts to the window's end
    open_ev = ev._replace(end=None)
    assert totals(A.compute([node()], [], [], [open_ev], 0, 2 * H)) == (0.5, 0.0, 1.5)


def test_untyped_demand_uses_any_type_of_its_partition():
    nodes = [node("a1", gpu_type="a100-80"), node("h1", gpu_type="h100")]
    # untyped, partition gpu: both GPUs; typed h100: only h1; another partition: none
    assert totals(A.compute(nodes, [], [waiting(1, 0, gpus=2)], [], 0, H))[1] == 2.0
    assert totals(A.compute(nodes, [], [waiting(2, 0, gpus=2, gpu_type="h100")], [], 0, H))[1] == 1.0
    assert totals(A.compute(nodes, [], [waiting(3, 0, gpus=2, partitions=("other",))], [], 0, H))[1] == 0.0
    # a job of unknown partition matches by type only; so does a node of unknown partition
    assert totals(A.compute(nodes, [], [waiting(4, 0, gpus=2, partitions=None)], [], 0, H))[1] == 2.0
    lone = [node("x1", partitions=())]
    assert totals(A.compute(lone, [], [waiting(5, 0, partitions=("other",))], [], 0, H))[1] == 1.0
    # a pending job listing several partitions can use any of them
    assert totals(A.compute(nodes, [], [waiting(6, 0, gpus=2, partitions=("other", "gpu"))], [], 0, H))[1] == 2.0


def test_specific_waits_choose_first():
    # one h100 (first in node order) and one a100 idle; an untyped job waits all hour, an h100 job from
    # half way: the typed one takes the h100, the untyped one moves over to the a100, both are met
    nodes = [node("h1", gpu_type="h100"), node("z1", gpu_type="a100-80")]
    waits = [waiting(1, 0), waiting(2, H // 2, gpu_type="h100")]
    g = A.compute(nodes, [], waits, [], 0, H)
    assert {u.node: u.demand_s for u in g.units} == {"h1": H, "z1": H // 2}


def test_a_multi_node_job_without_job_gpus_is_split_evenly():
    # 5 GPUs over n[1-2] (4 GPUs each), no job_gpus rows: 3 on n1, 2 on n2, counted per node
    nodes = [node("n1", gpus=4), node("n2", gpus=4)]
    g = A.compute(nodes, [held(1, 0, H, nodes=("n1", "n2"), gpus=5)], [], [], 0, H)
    assert {(u.node, u.minor, u.gpus, u.idle_s) for u in g.units} == {("n1", None, 4, H), ("n2", None, 4, 2 * H)}
    assert A.split_evenly(5, 2, 0) == 3 and A.split_evenly(5, 2, 1) == 2 and A.split_evenly(1, 3, 2) == 0


def test_job_gpus_on_some_nodes_the_rest_split_over_the_others():
    nodes = [node("n1", gpus=4), node("n2", gpus=4)]
    h = held(1, 0, H, nodes=("n1", "n2"), gpus=6, minors={"n1": (0, 1, 2, 3)})
    g = A.compute(nodes, [h], [], [], 0, H)
    per = {}
    for u in g.units:
        per[u.node] = per.get(u.node, 0) + u.idle_s
    assert per == {"n1": 0, "n2": 2 * H}
    assert {u.minor is None for u in g.units if u.node == "n2"} == {True}
    assert {u.minor for u in g.units if u.node == "n1"} == {0, 1, 2, 3}


def test_a_node_nobody_inventoried_is_noted():
    g = A.compute([node()], [held(1, 0, H, nodes=("ghost",))], [], [], 0, H)
    assert any("ghost" in n for n in g.notes)
    assert totals(g) == (1.0, 0.0, 0.0)


def test_dollars_are_gpu_hours_times_the_type_rate():
    nodes = [node("a1", gpu_type="a100-80", gpus=2), node("h1", gpu_type="h100", gpus=1)]
    g = A.compute(nodes, [], [waiting(1, 0, gpus=1, gpu_type="h100")], [], 0, H // 2)
    rows = A.table(g, None, book())
    by = {r["Node"]: r for r in rows}
    assert by["a1"]["IdleGPUHours"] == 1.0 and by["a1"]["IdleUSD"] == 2.0   # 2 x 0.5 h x $2
    assert by["h1"]["IdleUSD"] == 2.0 and by["h1"]["DemandUSD"] == 2.0 and by["h1"]["NoDemandUSD"] == 0.0
    assert by["total"]["IdleUSD"] == 4.0 and by["total"]["GPUs"] == 3
    assert by["total"]["GPUType"] == "a100-80,h100"
    assert [r["GPUType"] for r in A.table(g, "gputype", book())] == ["a100-80", "h100", "total"]


# --- sacctmgr show event --------------------------------------------------------

def recording(name: str) -> str:
    text = (FIX / name).read_text()
    assert text.startswith("# Slurm 22.05.8; captured ")  # the header names version, date and command
    assert "\n# command: " in text
    return text


def test_event_recordings_parse():
    five = ("NodeName", "Start", "End", "State", "Reason")
    done = parse_node_events(recording("events.txt"), fields=five, epoch=False, tz="UTC", cluster="piqc")
    assert done == [NodeEvent("piqc", "", 1796156624, None, "", "Cluster Registered TRES"),
                    NodeEvent("piqc", "vm", 1796159316, 1796159321, "DRAIN", "piqc-test")]
    still = parse_node_events(recording("events.open.txt"), fields=five, epoch=False, tz="UTC", cluster="piqc")
    assert still[1] == NodeEvent("piqc", "vm", 1796159316, None, "DRAIN", "piqc-test")
    # the argv piqc-slurm gaps runs: epoch times, Cluster first, node events only
    assert parse_node_events(recording("events.epoch.txt")) == [done[1]]


def test_event_reason_may_hold_the_delimiter_and_bad_lines_fail():
    ev = parse_node_events("piqc|n[1-2]|100|200|DOWN|bad | disk\n")
    assert ev == [NodeEvent("piqc", "n[1-2]", 100, 200, "DOWN", "bad | disk")]
    g = A.compute([node("n1"), node("n2")], [], [], [ev[0]._replace(cluster=C)], 0, 300)
    assert [d.node for d in g.downs] == ["n1", "n2"]
    with pytest.raises(ValueError):
        parse_node_events("piqc|vm|x|200|DOWN|r\n")
    with pytest.raises(ValueError):
        parse_node_events("piqc|vm|100\n")


def test_the_drain_recording_through_compute():
    ev = parse_node_events(recording("events.epoch.txt"))
    inv = A.Node("piqc", "vm", dict.fromkeys(range(8), "h100"), frozenset({"gpu"}), "gpu")
    g = A.compute([inv], [], [], ev, 1796159300, 1796159400)
    assert (sum(u.down_s for u in g.units), sum(u.idle_s for u in g.units)) == (8 * 5, 8 * 95)


# --- through the CLI: the gaps-2am example ----------------------------------------

def readme_row() -> str:
    text = (EXAMPLE / "README.md").read_text()
    m = re.search(r"should\s+print for gpu01: `([^`]+)`", text)
    assert m, "gaps-2am README: no `should print for gpu01: `...`` line"
    return m.group(1)


def cli(url: str, config: Path, *args: str, env_extra=None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIQC_", "SLURM_"))}
    env["TZ"] = "UTC"
    env.update(env_extra or {})
    r = subprocess.run([sys.executable, "-m", "piqc_slurm", "--config", str(config), "--db", url, *args],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, f"{' '.join(args)}: rc {r.returncode}\n{r.stderr}"
    return r


WINDOW = ("-S", "2026-11-27T01:00:00", "-E", "2026-11-27T06:00:00")


@pytest.fixture(scope="module")
def example_store(tmp_path_factory):
    d = tmp_path_factory.mktemp("gaps")
    config = d / "piqc.toml"
    config.write_text("")
    url = f"sqlite:///{d}/piqc.db"
    cli(url, config, "simulate", "--scenario", str(EXAMPLE / "scenario.json"), "-q")
    return url, config, d


def test_the_example_gives_the_readme_row(example_store):
    url, config, _ = example_store
    out = cli(url, config, "gaps", "-M", "ex-gaps", *WINDOW, "-P", "--no-events").stdout.splitlines()
    assert out[0] == "Node|GPUType|GPUs|IdleGPUHours|IdleUSD|DemandGPUHours|DemandUSD|NoDemandGPUHours|NoDemandUSD"
    assert out[1] == readme_row() == "gpu01|h100|8|16.00|64.00|9.17|36.67|6.83|27.33"
    assert out[2] == "total" + readme_row()[len("gpu01"):]
    assert len(out) == 3


def test_no_sacctmgr_warns_and_goes_on(example_store):
    url, config, _ = example_store
    r = cli(url, config, "gaps", "-M", "ex-gaps", *WINDOW, "-P", "-n", env_extra={"PATH": "/nonexistent"})
    assert r.stdout.splitlines()[0] == readme_row()
    assert "node events not read" in r.stderr and "sacctmgr not found" in r.stderr


def test_by_gpu_partition_gputype_and_fields(example_store):
    url, config, _ = example_store
    rows = cli(url, config, "gaps", "-M", "ex-gaps", *WINDOW, "-P", "--no-events", "--by", "gpu").stdout.splitlines()
    assert rows[0].startswith("Node|GPU|GPUType|GPUs|")
    per = {r.split("|")[1]: r.split("|") for r in rows[1:-1]}
    assert sorted(per) == [str(i) for i in range(8)]
    # GPUs 4-7: idle 02:00-02:30 and 04:00-06:00 = 2.5 h; 0-3: 02:00-02:30 and 04:00-05:00 = 1.5 h
    assert {per[m][4] for m in "4567"} == {"2.50"} and {per[m][4] for m in "0123"} == {"1.50"}
    part = cli(url, config, "gaps", "-M", "ex-gaps", *WINDOW, "-P", "-n", "--no-events", "--by", "partition",
               "-o", "Partition,IdleGPUHours,DemandGPUHours,DownGPUHours").stdout.splitlines()
    assert part == ["gpu|16.00|9.17|0.00", "total|16.00|9.17|0.00"]
    # a grace longer than the 5 min that 4002 and 4003 waited on idle GPUs leaves those waits out
    lenient = cli(url, config, "gaps", "-M", "ex-gaps", *WINDOW, "-P", "-n", "--no-events", "--grace", "600",
                  "-o", "DemandGPUHours").stdout.splitlines()
    assert lenient[0] == "8.50"  # 9.17 - 02:25-02:30 (8 - 2) x 5 min - 04:55-05:00 (8 - 6) x 5 min


def test_the_gaps_are_kept_for_the_digest_and_replaced(example_store):
    url, config, d = example_store
    for _ in range(2):
        cli(url, config, "gaps", "-M", "ex-gaps", *WINDOW, "--no-events")
    con = sqlite3.connect(f"{d}/piqc.db")
    rows = con.execute('SELECT kind, minor, "start", "end", gpus, demand_gpu_seconds, window_start, window_end '
                       "FROM idle_gaps WHERE cluster = 'ex-gaps'").fetchall()
    con.close()
    assert len(rows) == 16  # 8 GPUs x (02:00-02:30, 04:00-05:00 or 04:00-06:00), once: the rerun replaced them
    assert sum(g * (e - s) for _, _, s, e, g, _, _, _ in rows) == 16 * H
    assert sum(r[5] for r in rows) == 33000  # 9.167 GPU-hours of demand, by the README's hand computation
    assert {(r[6], r[7]) for r in rows} == {(1795741200, 1795759200)}


def test_table_mode_and_bad_field(example_store):
    url, config, _ = example_store
    out = cli(url, config, "gaps", "-M", "ex-gaps", *WINDOW, "--no-events", "--no-store").stdout.splitlines()
    assert out[0].split() == ["Node", "GPUType", "GPUs", "IdleGPUHours", "IdleUSD", "DemandGPUHours", "DemandUSD",
                              "NoDemandGPUHours", "NoDemandUSD"]
    assert set(out[1]) <= {"-", " "}
    assert out[2].split() == readme_row().split("|")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIQC_")}
    r = subprocess.run([sys.executable, "-m", "piqc_slurm", "--config", str(example_store[1]), "--db",
                        example_store[0], "gaps", *WINDOW, "-o", "Nope"], capture_output=True, text=True, env=env)
    assert r.returncode == 2 and "unknown field 'Nope'" in r.stderr
