"""The node GPU inventory (store/inventory.py), the GPUs a job held (job_gpus,
from its summary), and the GPU types in the store that the catalog does not
know (doctor.gpu_type_counts / unknown_gpu_types), on a SQLite store in tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from piqc_slurm.doctor import WARN, check_gpu_types, gpu_type_counts, unknown_gpu_types
from piqc_slurm.store import open_engine, upsert_summary
from piqc_slurm.store.inventory import from_scontrol, note_gpus
from piqc_slurm.store.models import Job, JobGpu, NodeGpu
from piqc_slurm.usage.catalog import load_catalog

SUMMARIES = Path(__file__).resolve().parent.parent / "fixtures" / "summaries"


@pytest.fixture
def engine(tmp_path):
    e = open_engine(f"sqlite:///{tmp_path}/store.db")
    yield e
    e.dispose()


def summary(name: str) -> dict:
    return json.loads((SUMMARIES / name).read_text())


def inventory(engine, cluster: str = "piqc", node: str = "vm") -> dict[int, NodeGpu]:
    with Session(engine) as s:
        rows = s.execute(select(NodeGpu).where(NodeGpu.cluster == cluster, NodeGpu.node == node)).scalars()
        return {r.minor: r for r in rows}


def job_gpus(engine) -> list[JobGpu]:
    with Session(engine) as s:
        return list(s.execute(select(JobGpu).order_by(JobGpu.node, JobGpu.minor)).scalars())


# -- the inventory's ranks -------------------------------------------------


def test_scontrol_rows_are_upgraded_by_a_later_summary_and_never_downgraded(engine):
    doc = summary("4gpu-2idle.summary.json")  # job 134 on vm, GPUs 0-3, ended 1795868896.9
    ended = int(doc["ended"])
    with Session(engine) as s, s.begin():
        assert from_scontrol(s, "piqc", {"vm": [("h100", 8)]}, ended - 3600) == 8
    before = inventory(engine)
    assert sorted(before) == list(range(8))
    assert {(r.gpu_type, r.uuid, r.name, r.source) for r in before.values()} == {("h100", None, None, "scontrol")}

    with Session(engine) as s, s.begin():
        upsert_summary(s, doc)
    after = inventory(engine)
    for m in range(4):  # what the sampler read: UUID and NVML name
        assert (after[m].source, after[m].uuid, after[m].name, after[m].gpu_type) == (
            "summary", f"GPU-1a2b000{m}-5e1f-4c0d-9a7b-00000000000{m}", "NVIDIA H100 80GB HBM3", "h100")
        assert after[m].seen_at == ended
    for m in range(4, 8):  # GPUs the job did not hold keep what scontrol said
        assert (after[m].source, after[m].uuid, after[m].seen_at) == ("scontrol", None, ended - 3600)

    # A later scontrol pass (the next ingest) counts and types only: it must not overwrite the summary's rows.
    with Session(engine) as s, s.begin():
        from_scontrol(s, "piqc", {"vm": [("nvidia_h100_80gb_hbm3", 8)]}, ended + 3600)
    again = inventory(engine)
    for m in range(4):
        assert (again[m].source, again[m].uuid, again[m].name, again[m].gpu_type, again[m].seen_at) == (
            "summary", f"GPU-1a2b000{m}-5e1f-4c0d-9a7b-00000000000{m}", "NVIDIA H100 80GB HBM3", "h100", ended)
    for m in range(4, 8):  # scontrol rows are refreshed by scontrol
        assert (again[m].source, again[m].gpu_type, again[m].seen_at) == (
            "scontrol", "nvidia_h100_80gb_hbm3", ended + 3600)


def test_a_summary_replayed_after_the_same_ingests_scontrol_pass_still_adds_uuids(engine):
    doc = summary("4gpu-2idle.summary.json")
    with Session(engine) as s, s.begin():  # ingest: scontrol first, at the time of the run ...
        from_scontrol(s, "piqc", {"vm": [("h100", 8)]}, int(doc["ended"]) + 600)
    with Session(engine) as s, s.begin():  # ... then the spool's summaries, which ended before it
        upsert_summary(s, doc)
    assert inventory(engine)[0].uuid == "GPU-1a2b0000-5e1f-4c0d-9a7b-000000000000"


def test_same_source_newer_sighting_wins_older_does_not(engine):
    with Session(engine) as s, s.begin():
        note_gpus(s, "piqc", "vm", [(0, "h100", None, None)], "scontrol", 100)
        assert note_gpus(s, "piqc", "vm", [(0, "a100", None, None)], "scontrol", 50) == 0
    assert inventory(engine)[0].gpu_type == "h100"
    with Session(engine) as s, s.begin():
        assert note_gpus(s, "piqc", "vm", [(0, "a100", None, None)], "scontrol", 200) == 1
    assert (inventory(engine)[0].gpu_type, inventory(engine)[0].seen_at) == ("a100", 200)


def test_from_scontrol_numbers_minors_across_types_in_gres_order(engine):
    gres = {"g1": [("a100", 2), ("t4", 3), (None, 1)], "g2": [("l4", 1)]}
    with Session(engine) as s, s.begin():
        assert from_scontrol(s, "c", gres, 1000) == 7
    g1 = inventory(engine, "c", "g1")
    assert [(m, r.gpu_type) for m, r in sorted(g1.items())] == [
        (0, "a100"), (1, "a100"), (2, "t4"), (3, "t4"), (4, "t4"), (5, None)]
    assert all(r.uuid is None and r.source == "scontrol" and r.seen_at == 1000 for r in g1.values())
    assert [(m, r.gpu_type) for m, r in inventory(engine, "c", "g2").items()] == [(0, "l4")]
    assert inventory(engine, "piqc", "g1") == {}  # rows are per cluster


# -- job_gpus from summaries ------------------------------------------------


def test_no_driver_summary_gives_prolog_rows_without_uuids(engine):
    doc = summary("no-driver.summary.json")  # NVML down: "gpus": [0, 1], "devices": []
    assert doc["nvml"]["ok"] is False
    with Session(engine) as s, s.begin():
        upsert_summary(s, doc)
    rows = job_gpus(engine)
    assert [(r.node, r.minor, r.uuid, r.source) for r in rows] == [("vm", 0, None, "prolog"), ("vm", 1, None, "prolog")]
    assert inventory(engine) == {}  # nothing was read of the devices: the inventory learns nothing


def test_nvml_summary_gives_device_uuids(engine):
    with Session(engine) as s, s.begin():
        upsert_summary(s, summary("4gpu-2idle.summary.json"))
    rows = job_gpus(engine)
    assert [(r.node, r.minor, r.uuid, r.source) for r in rows] == [
        ("vm", 0, "GPU-1a2b0000-5e1f-4c0d-9a7b-000000000000", "nvml"),
        ("vm", 1, "GPU-1a2b0001-5e1f-4c0d-9a7b-000000000001", "nvml"),
        ("vm", 2, "GPU-1a2b0002-5e1f-4c0d-9a7b-000000000002", "nvml"),
        ("vm", 3, "GPU-1a2b0003-5e1f-4c0d-9a7b-000000000003", "nvml"),
    ]
    # the same summary again replaces its rows, it does not add to them
    with Session(engine) as s, s.begin():
        upsert_summary(s, summary("4gpu-2idle.summary.json"))
    assert len(job_gpus(engine)) == 4


# -- GPU types the catalog does not know (doctor) --------------------------


def add_jobs(engine, types: list[str | None], cluster: str = "piqc") -> None:
    with Session(engine) as s, s.begin():
        for i, t in enumerate(types, 1):
            s.add(Job(cluster=cluster, job_id_raw=i, submit=1_000 + i, job_id=str(i), gpu_type=t,
                      alloc_gpus=0 if t is None else 1))


def test_unknown_types_counted_by_jobs(engine):
    add_jobs(engine, ["h100", "h100", "a100", "mi300x", "MI300X", "mi300x", None])
    with Session(engine) as s, s.begin():
        from_scontrol(s, "piqc", {"n1": [("gaudi2", 8)], "n2": [("nvidia_h100_80gb_hbm3", 4)]}, 1)
    counts = gpu_type_counts(engine)
    assert counts == {"h100": 2, "a100": 1, "mi300x": 3, "gaudi2": 0, "nvidia_h100_80gb_hbm3": 0}
    catalog = load_catalog()
    # h100 is a catalog type, a100 a gres name of a100-80, nvidia_h100_80gb_hbm3 an AutoDetect name
    assert unknown_gpu_types(counts, catalog) == {"mi300x": 3, "gaudi2": 0}
    # a type the config prices is not at the fallback
    assert unknown_gpu_types(counts, catalog, {"MI300X": 3.5, "default": 1.0}) == {"gaudi2": 0}
    assert unknown_gpu_types({"h100": 2, "a100": 1}, catalog) == {}


def test_gpu_types_check(engine, tmp_path):
    url = str(engine.url)
    empty = check_gpu_types(url, {})
    assert (empty.status, empty.what) == ("OK", "skipped: no GPU types in the store yet (nothing ingested)")
    add_jobs(engine, ["h100", "a100"])
    ok = check_gpu_types(url, {})
    assert ok.status == "OK" and "a100, h100" in ok.what
    add_jobs(engine, ["mi300x", "mi300x"], cluster="other")
    warn = check_gpu_types(url, {"default": 1.5})
    assert warn.status == WARN
    assert "mi300x (2 jobs)" in warn.what and "$1.50" in warn.what and "[partition_prices]" in warn.what
    assert "[prices]" in warn.fix and "mi300x = " in warn.fix
    assert check_gpu_types(url, {"mi300x": 3.0}).status == "OK"
    down = check_gpu_types("postgresql+psycopg://x@127.0.0.1:1/none", {})
    assert down.status == "OK" and down.what.startswith("skipped: ")
