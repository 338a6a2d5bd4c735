"""A job on several nodes, without a cluster: the batch host's report over every node's recorded
summary (job 2526 of tests/integration/test_zx_multinode.py, an h100 node and an l40s node, one
busy and one idle GPU on each), how the Epilog finds the other nodes' summaries, the %n of a host
that runs several slurmd, and the per-node advice."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from piqc_slurm import config
from piqc_slurm.analyze.explain import idle_advice
from piqc_slurm.errors import ConfigError
from piqc_slurm.hooks.context import from_env
from piqc_slurm.hooks.epilog import other_nodes
from piqc_slurm.report.epilog_text import render
from piqc_slurm.slurm.parse import first_node, node_count
from piqc_slurm.usage.catalog import load_catalog
from piqc_slurm.usage.prices import Prices

pytestmark = pytest.mark.unit
FX = Path(__file__).resolve().parent.parent / "fixtures" / "multinode"  # of job 2526, recorded live
PRICES = Prices(load_catalog())  # list prices: h100 $3.99, l40s $1.09 (piqc_slurm/data/gpus.json)


def two() -> tuple[dict, dict]:
    return tuple(json.loads((FX / f"two-nodes-node{n}.summary.json").read_text()) for n in (1, 2))


def test_the_batch_hosts_report_covers_both_nodes_each_at_its_price():
    node1, node2 = two()
    text = render(node1, PRICES, others=[node2])
    lines = text.splitlines()
    assert lines[0] == "==== piqc-slurm GPU report: job 2526 on node[1-2] (2 nodes, 4 GPUs) ===="
    assert [ln.split()[:2] for ln in lines[2:6]] == [["node1", "0"], ["node1", "1"], ["node2", "0"], ["node2", "1"]]
    assert [ln.endswith("did no work") for ln in lines[2:6]] == [False, True, True, False]
    # by hand: each node 20 whole seconds (Prolog 1796358967 -> Epilog 1796358987), 2 GPUs each:
    # 2 x 20/3600 x 3.99 + 2 x 20/3600 x 1.09 = 0.0564 -> $0.06
    assert lines[6] == ("Estimated cost: $0.06 for 00:00:20 (2 x h100 at $3.99/GPU-hour on node1; "
                        "2 x l40s at $1.09/GPU-hour on node2)")
    # two idle GPUs of four, one on each node: half the cost, $0.0282 -> $0.03; advice per node
    assert lines[7] == ("IDLE_GPUS: 2 of 4 allocated GPUs did no work (active less than 5% of the job); "
                        "$0.03 of $0.06 bought idle GPUs.")
    assert lines[8] == "  Advice: Request 2 GPUs in all, not 4 on 2 nodes: --gres=gpu:1 on each of 2 nodes (-N2)."
    assert len(lines) == 9


def test_a_node_whose_summary_did_not_come_is_named_and_nothing_is_judged():
    node1, _ = two()
    text = render(node1, PRICES, missing=["node2"])
    assert text.splitlines()[0] == "==== piqc-slurm GPU report: job 2526 on node[1-2] (2 nodes, 2 GPUs reported) ===="
    assert "Estimated cost: $0.04 for 00:00:20 (2 x h100 at $3.99/GPU-hour on node1)" in text  # 2 x 20/3600 x 3.99
    assert "Not included: node2 (no summary in the shared spool in time); `seff 2526` has every node" in text
    assert "IDLE_GPUS" not in text


def test_one_node_report_is_unchanged():
    node1, _ = two()
    text = render(node1, PRICES)
    assert text.splitlines()[0] == "==== piqc-slurm GPU report: job 2526 on node1 (2 GPUs) ===="
    assert "Advice: Request --gres=gpu:1." in text


def _ctx(nodelist: str, node: str = "node1"):
    return from_env({"SLURM_JOB_ID": "2526", "SLURMD_NODENAME": node, "SLURM_JOB_GPUS": "0,1",
                     "SLURM_NODELIST": nodelist, "SLURM_JOB_UID": str(os.getuid()), "SLURM_JOB_USER": "u"}, "piqc")


def _cfg(tmp_path: Path, **keys) -> config.Config:
    values = {**config.defaults(), "delivery": "shared-spool", "shared_spool_dir": str(tmp_path / "shared"),
              "epilog.report_wait": 0.0, **keys}
    return config.Config(values)


def _deliver(tmp_path: Path, doc: dict, start: int | None = None) -> Path:
    d = tmp_path / "shared" / doc["node"]
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    p = d / f"piqc.{doc['job_id']}.0.{doc['node']}.{start or int(doc['started'])}.summary.json"
    p.write_text(json.dumps(doc))
    return p


def test_other_nodes_are_read_from_the_shared_spool(tmp_path):
    node1, node2 = two()
    _deliver(tmp_path, node2)
    got, missing = other_nodes(_ctx("node[1-2]"), _cfg(tmp_path), node1)
    assert (got, missing) == ([node2], [])


def test_other_nodes_are_waited_for_then_named_missing(tmp_path):
    node1, node2 = two()
    slept = []

    def sleep(s):  # the other Epilog delivers while this one waits
        slept.append(s)
        if len(slept) == 3:
            _deliver(tmp_path, node2)

    got, missing = other_nodes(_ctx("node[1-2]"), _cfg(tmp_path, **{"epilog.report_wait": 30.0}), node1, sleep=sleep)
    assert got == [node2] and missing == [] and len(slept) == 3
    shutil.rmtree(tmp_path / "shared")
    got, missing = other_nodes(_ctx("node[1-2]"), _cfg(tmp_path), node1)
    assert (got, missing) == ([], ["node2"])


def test_other_nodes_skip_another_run_and_other_deliveries(tmp_path):
    node1, node2 = two()
    _deliver(tmp_path, node2, start=int(node2["started"]) - 7200)  # a reused job id's, two hours before
    assert other_nodes(_ctx("node[1-2]"), _cfg(tmp_path), node1) == ([], ["node2"])
    _deliver(tmp_path, {**node2, "job_id": 9})  # a file named for this job that holds another
    os.rename(tmp_path / "shared" / "node2" / f"piqc.9.0.node2.{int(node2['started'])}.summary.json",
              tmp_path / "shared" / "node2" / f"piqc.2526.0.node2.{int(node2['started'])}.summary.json")
    assert other_nodes(_ctx("node[1-2]"), _cfg(tmp_path), node1) == ([], ["node2"])
    assert other_nodes(_ctx("node[1-2]"), _cfg(tmp_path, delivery="push"), node1) == ([], ["node2"])
    assert other_nodes(_ctx("node1"), _cfg(tmp_path), node1) == ([], [])


def test_spool_dir_takes_the_node_name(tmp_path):
    path = tmp_path / "piqc.toml"
    path.write_text('spool_dir = "/var/spool/piqc-%n"\n')
    assert config.load(str(path), env={"SLURMD_NODENAME": "node2"})["spool_dir"] == "/var/spool/piqc-node2"
    with pytest.raises(ConfigError, match="is not a plain name"):
        config.load(str(path), env={"SLURMD_NODENAME": "../etc"})
    path.write_text('spool_dir = "/var/spool/piqc"\n')
    assert config.load(str(path), env={"SLURMD_NODENAME": "node2"})["spool_dir"] == "/var/spool/piqc"


@pytest.mark.parametrize("used, alloc, nodes, advice", [
    (3, 4, 1, "Request --gres=gpu:3."),
    (2, 4, 2, "Request 2 GPUs in all, not 4 on 2 nodes: --gres=gpu:1 on each of 2 nodes (-N2)."),
    (1, 4, 2, "Request 1 GPU in all, not 4 on 2 nodes: --gres=gpu:1 on 1 node (-N1)."),
    (5, 8, 4, "Request 5 GPUs in all, not 8 on 4 nodes: --gres=gpu:2 on each of 3 nodes (-N3)."),
])
def test_idle_advice_is_per_node(used, alloc, nodes, advice):
    assert idle_advice(used, alloc, nodes) == advice


def test_idle_advice_follows_where_the_gpus_worked():
    assert idle_advice(2, 4, 2, used_nodes=1, used_per_node=2) == \
        "Request 2 GPUs in all, not 4 on 2 nodes: --gres=gpu:2 on 1 node (-N1)."
    assert idle_advice(3, 8, 2, used_nodes=2, used_per_node=2) == \
        "Request 3 GPUs in all, not 8 on 2 nodes: --gres=gpu:2 on each of 2 nodes (-N2)."


def test_first_node_and_count():
    assert (first_node("node[1-2]"), node_count("node[1-2]")) == ("node1", 2)
    assert (first_node("gpu[07-08],vm"), node_count("gpu[07-08],vm")) == ("gpu07", 3)
    assert (first_node("vm"), node_count("vm")) == ("vm", 1)
    assert node_count("None assigned") == 0


def test_idle_gpus_of_the_dearer_type_cost_their_price_share():
    """The same recorded job with node1's two h100 idle and node2's two l40s busy: IDLE_GPUS takes the
    h100 share of the price, not half the cost; the advice puts the two working GPUs on one node."""
    node1, node2 = two()
    for d in node1["devices"]:
        d.update(active_seconds=0.0, did_work=False, util_mean=0.0)
    for d in node2["devices"]:
        d.update(active_seconds=d["seconds"], did_work=True, util_mean=50.0)
    lines = render(node1, PRICES, others=[node2]).splitlines()
    # by hand: 2 x 20/3600 x 3.99 = 0.0443 of 0.0564 (count share: 0.0282, $0.03)
    assert lines[7] == ("IDLE_GPUS: 2 of 4 allocated GPUs did no work (active less than 5% of the job); "
                        "$0.04 of $0.06 bought idle GPUs.")
    assert lines[8] == "  Advice: Request 2 GPUs in all, not 4 on 2 nodes: --gres=gpu:2 on 1 node (-N1)."


def test_idle_cost_share_and_node_use_by_hand():
    from piqc_slurm.analyze.inputs import idle_cost_share, mixed_rates, node_use

    rows = [{"node": "a", "gpu_type": "h100", "samples": 10, "seconds": 10, "active_seconds": 0},
            {"node": "a", "gpu_type": "h100", "samples": 10, "seconds": 10, "active_seconds": 10},
            {"node": "b", "gpu_type": "l40s", "samples": 10, "seconds": 10, "active_seconds": 10},
            {"node": "b", "gpu_type": "l40s", "samples": 10, "seconds": 10, "active_seconds": 10}]
    rates = mixed_rates([(2, "h100", 4.0), (2, "l40s", 1.0)])
    assert rates == ({"h100": 4.0, "l40s": 1.0}, 10.0)
    assert idle_cost_share(rows, 0.05, rates) == pytest.approx(0.4)  # one idle h100: 4 of 10
    assert mixed_rates([(4, "h100", 4.0)]) is None
    assert idle_cost_share(rows, 0.05, None) != idle_cost_share(rows, 0.05, None)  # NaN: the count share
    assert idle_cost_share([{**rows[0], "gpu_type": "a100"}], 0.05, rates) != 0.0  # a type without a rate: NaN
    assert node_use(rows, 0.05) == {"used_nodes": 2.0, "used_per_node": 2.0}


def test_other_nodes_never_wait_past_the_hooks_deadline(tmp_path):
    import time

    node1, _ = two()
    slept = []
    t = time.monotonic()
    got = other_nodes(_ctx("node[1-2]"), _cfg(tmp_path, **{"epilog.report_wait": 60.0}), node1,
                      sleep=lambda s: (slept.append(s), time.sleep(s)), until=time.monotonic() + 0.2)
    assert got == ([], ["node2"]) and time.monotonic() - t < 2.0 and slept
