"""`scontrol show config` and `scontrol show node -o` parsing (slurm/parse.py):
recorded real outputs (tests/fixtures/scontrol/22.05.8, the test cluster) and
Gres= strings as Slurm's documentation and real clusters show them."""

from __future__ import annotations

from pathlib import Path

import pytest

from piqc_slurm.slurm.parse import parse_node_gres, parse_show_config

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "scontrol" / "22.05.8"


def recording(name: str) -> str:
    text = (FIX / name).read_text()
    assert text.startswith("# Slurm 22.05.8; captured ")  # the header names version, date and command
    return text


def node_line(gres: str, node: str = "n1") -> str:
    """One `scontrol show node -o` line, shaped like the recording, with this Gres=."""
    return (f"NodeName={node} Arch=x86_64 CoresPerSocket=16  CPUAlloc=0 CPUEfctv=32 CPUTot=32 CPULoad=0.01 "
            f"AvailableFeatures=(null) ActiveFeatures=(null) Gres={gres} NodeAddr={node} NodeHostName={node} "
            "Version=22.05.8 OS=Linux 6.1.0-13-amd64 #1 SMP PREEMPT_DYNAMIC Debian 6.1.55-1 (2023-09-29)  "
            "RealMemory=500000 AllocMem=0 FreeMem=490000 Sockets=2 Boards=1 State=IDLE ThreadsPerCore=1 "
            "Partitions=gpu  CfgTRES=cpu=32,mem=500000M,billing=32 AllocTRES= CapWatts=n/a")


# -- the recordings --------------------------------------------------------


def test_show_config_recording_gives_the_cluster_name():
    conf = parse_show_config(recording("show_config.txt"))
    assert conf["ClusterName"] == "piqc"
    assert conf["GresTypes"] == "gpu"
    assert conf["AccountingStorageTRES"] == "cpu,mem,energy,node,billing,fs/disk,vmem,pages,gres/gpu,gres/gpu:h100"
    # the header, "Configuration data as of ..." and "Slurmctld(primary) at vm is UP" are not keys
    assert not any(k.startswith("#") or " " in k for k in conf)
    # keys of the later sections (cgroup.conf) are read too; values keep their inner spaces
    assert conf["CgroupPlugin"] == "cgroup/v1"
    assert conf["BatchStartTimeout"] == "10 sec"


def test_show_node_recording_gives_8_h100_on_vm():
    assert parse_node_gres(recording("show_node.txt")) == {"vm": [("h100", 8)]}


# -- Gres= forms -----------------------------------------------------------
# Sources:
# - https://slurm.schedmd.com/gres.html (Configuration): the slurm.conf node line
#   `Gres=gpu:tesla:2,gpu:kepler:2,mps:400,bandwidth:lustre:no_consume:4G`; scontrol shows a
#   node's slurm.conf Gres until its slurmd registers.
# - https://slurm.schedmd.com/gres_design.html: a node's gres string, e.g. "gpu:2,nic:1".
# - Slurm's src/common/gres.c, _build_node_gres_str() (what scontrol shows once slurmd has
#   registered): "name:type:count[(S:sockets)]" per type, "name:count[(S:...)]" untyped,
#   sockets printed by bit_fmt ("0-1", "0,2,4"); no GRES at all prints "(null)".
# - Real `scontrol show node` output: `Gres=gpu:rtx_6000:4(S:0-1)` (run-ai/genv#72),
#   `Gres=gpu:a40:1(S:0,2,4,6,8,10)` on Slurm 25.05.2 (SlinkyProject/slurm-operator#45),
#   `Gres=(null)` on Slurm 25.11.0 (SlinkyProject/slurm-operator#101), two types
#   `Gres=gpu:model_a:2,gpu:model_b:2` on Slurm 25.11.2 (SckyzO/slurm_exporter#207).
# - slurm.conf(5), Gres: `<name>[:<type>][:no_consume]:<number>[K|M|G]` (quoted in
#   stackhpc/ansible-role-openhpc#155); GresTypes names are the site's own.


@pytest.mark.parametrize("gres,want", [
    ("gpu:h100:8", [("h100", 8)]),
    ("gpu:a100:4(S:0-1)", [("a100", 4)]),
    ("gpu:rtx_6000:4(S:0-1)", [("rtx_6000", 4)]),
    ("gpu:a40:1(S:0,2,4,6,8,10)", [("a40", 1)]),
    ("gpu:tesla:2,gpu:kepler:2,mps:400,bandwidth:lustre:no_consume:4G", [("tesla", 2), ("kepler", 2)]),
    ("gpu:a100:4(S:0),gpu:t4:2(S:1)", [("a100", 4), ("t4", 2)]),
    ("gpu:model_a:2,gpu:model_b:2", [("model_a", 2), ("model_b", 2)]),
    ("gpu:2", [(None, 2)]),
    ("gpu:2,nic:1", [(None, 2)]),
    ("gpu:2(S:0-1),mps:200(S:0-1)", [(None, 2)]),
    ("mps:100,gpu:nvidia_a100-sxm4-80gb:4(S:0-1)", [("nvidia_a100-sxm4-80gb", 4)]),
    ("gpu:nvidia_a100_3g.40gb:2(S:0),gpu:nvidia_a100_1g.10gb:4(S:1)",
     [("nvidia_a100_3g.40gb", 2), ("nvidia_a100_1g.10gb", 4)]),
    # a site's own GRES after a GPU, named with capitals, digits or "_": the GPU is still read
    ("gpu:Tesla_V100:2,Lscratch:100", [("Tesla_V100", 2)]),
    ("gpu:a100:2,ib0:1,gpu:t4:1", [("a100", 2), ("t4", 1)]),
    ("gpu:a40:1(S:0,2,4),local_disk:100(S:0,1)", [("a40", 1)]),
    # slurm.conf's no_consume flag is not a type
    ("gpu:no_consume:2", [(None, 2)]),
    ("gpu:tesla:no_consume:2", [("tesla", 2)]),
    # slurmctld writes counts that are multiples of 1024 with a suffix
    ("gpu:1K", [(None, 1024)]),
], ids=["typed", "sockets", "real-rtx6000", "real-socket-list", "gres-html", "two-types", "real-two-types",
        "untyped", "untyped-nic", "untyped-mps", "mps-first", "mig-slices", "capitals-after", "digits-after",
        "socket-lists", "no-consume", "typed-no-consume", "suffix"])
def test_gpu_gres_forms(gres, want):
    assert parse_node_gres(node_line(gres)) == {"n1": want}


@pytest.mark.parametrize("gres", ["(null)", "mps:100", "nic:1,bandwidth:lustre:no_consume:4G", "", "gpu:a100:0",
                                  "shard:64(S:0-1)", "gpumem:80G"])
def test_no_gpus_no_entry(gres):
    assert parse_node_gres(node_line(gres)) == {}


def test_several_nodes_keep_their_own_gres():
    text = "\n".join([node_line("gpu:a100:4(S:0-1)", "g1"), node_line("(null)", "c1"),
                      node_line("gpu:t4:2,mps:200", "g2")])
    assert parse_node_gres(text) == {"g1": [("a100", 4)], "g2": [("t4", 2)]}


def test_a_reason_naming_gres_does_not_replace_the_nodes_own():
    line = node_line("gpu:h100:8(S:0)") + " Reason=was Gres=gpu:h100:7 [root@2026-12-01T10:00:00]"
    assert parse_node_gres(line) == {"n1": [("h100", 8)]}
