"""The shipped Prometheus alerting rules and Grafana dashboard use only the series, labels and rule
names the sampler's textfile has (sampler/textfile.py, sampler/watch.py): a renamed series breaks here."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from piqc_slurm.sampler.textfile import HELP, render
from piqc_slurm.sampler.watch import RULES

pytestmark = pytest.mark.unit
DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
SERIES = re.compile(r"\bpiqc_[a-z_]+\b")


def _labels_written() -> set[str]:
    text = render({"jobid": "1", "user": "u", "account": "a", "partition": "p", "cluster": "c"},
                  [{"gpu": 0, "uuid": "GPU-0", "type": "t", "util": 1.0, "mem_bytes": 1.0, "power_w": 1.0,
                    "idle_s": 0.0}], cost_usd=1.0, firing={})
    return {k for f in text_string_to_metric_families(text) for s in f.samples for k in s.labels}


def expressions() -> list[str]:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "piqc-watch.rules.yml").read_text())
    out = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    dash = json.loads((DEPLOY / "grafana" / "piqc-jobs.json").read_text())
    out += [t["expr"] for p in dash["panels"] for t in p["targets"]]
    out += [v["query"] for v in dash["templating"]["list"] if v["type"] == "query"]
    return out


def test_every_expression_names_series_the_sampler_writes():
    exprs = expressions()
    assert len(exprs) >= 10
    used = {m for e in exprs for m in SERIES.findall(e)}
    assert used and used <= set(HELP), used - set(HELP)
    assert {"piqc_job_rule_firing", "piqc_job_cost_usd", "piqc_gpu_idle_seconds"} <= used


def test_labels_and_rule_names_exist():
    written = _labels_written() | {"rule"}
    for e in expressions():
        for names in re.findall(r"by \(([^)]*)\)", e) + re.findall(r"on \(([^)]*)\)", e):
            assert {n.strip() for n in names.split(",")} <= written, e
        for name in re.findall(r"(\w+)=~?\"", e):
            assert name in written, e
        for rule in re.findall(r'rule="(\w+)"', e):
            assert rule in RULES, e
    assert "job" not in written  # the scrape job's label is left to Prometheus
