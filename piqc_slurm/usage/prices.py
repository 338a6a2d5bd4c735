"""The price of a GPU-hour (and of a CPU core-hour), from one lookup.

Order, first hit wins, for a job's GPU type and partition:
  1. the store's prices for the job's cluster (a scenario loaded by
     `simulate` brings its own), by type;
  2. the config's `[prices]`, by type;
  3. the catalog's default price for the type (data/gpus.json, dated, with
     its public source);
  4. the partition's price: the store's, then the config's
     `[partition_prices]` (for GPUs whose type Slurm does not record, e.g.
     `--gres=gpu:2` on an untyped gres.conf);
  5. the fallback: `[prices] default`, else the catalog's fallback price.
Steps 4 and 5 mean the type is unknown: the Rate says so (`known` False)
so `doctor` and the digest can count such jobs; nothing is ever priced at
zero by accident. A GPU type is matched through the catalog's names and gres
aliases (`a100` is `a100-80`, `H100_SXM` is `h100`).

Nothing here is cached globally: a Prices is built from a catalog and the
overrides given to it, so a scenario or a config can change them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from piqc_slurm.usage.catalog import Catalog


class Rate(NamedTuple):
    usd: float          # per GPU-hour
    source: str         # "store", "config", "catalog", "partition", "fallback"
    gpu_type: str | None  # the canonical type it was looked up as (None: unknown)

    @property
    def known(self) -> bool:
        return self.source not in ("partition", "fallback")


def _lower(d: Mapping[str, float] | None) -> dict[str, float]:
    return {str(k).lower(): float(v) for k, v in (d or {}).items()}


class Prices:
    """GPU-hour and CPU core-hour prices for one cluster."""

    __slots__ = ("catalog", "store_types", "config_types", "store_partitions", "config_partitions",
                 "fallback", "cpu_core_hour", "_rates")

    def __init__(self, catalog: Catalog, *, config_types: Mapping[str, float] | None = None,
                 config_partitions: Mapping[str, float] | None = None,
                 store_types: Mapping[str, float] | None = None,
                 store_partitions: Mapping[str, float] | None = None,
                 cpu_core_hour: float = 0.0):
        self.catalog = catalog
        self.config_types = _lower(config_types)
        self.store_types = _lower(store_types)
        self.config_partitions = _lower(config_partitions)
        self.store_partitions = _lower(store_partitions)
        fallback = self.store_types.pop("default", None)
        cfg_fallback = self.config_types.pop("default", None)
        self.fallback = fallback if fallback is not None else (
            cfg_fallback if cfg_fallback is not None else float(catalog.fallback_price))
        self.cpu_core_hour = float(cpu_core_hour)
        self._rates: dict[tuple, Rate] = {}  # this instance's lookups (a window prices a million jobs)
        # Price keys are canonicalised once, so [prices] a100 = 2.8 prices gres "a100_80gb" too.
        self.config_types = self._canon(self.config_types)
        self.store_types = self._canon(self.store_types)

    def _canon(self, d: dict[str, float]) -> dict[str, float]:
        return {(self.catalog.canonical(k) or k): v for k, v in d.items()}

    @classmethod
    def from_config(cls, cfg, catalog: Catalog, store: Mapping[str, Mapping[str, float]] | None = None) -> Prices:
        """From a piqc config (`prices`, `partition_prices`, `usage.cpu_core_hour_price`) and the
        store's overrides for one cluster ({"type": {...}, "partition": {...}})."""
        store = store or {}
        return cls(catalog, config_types=cfg["prices"], config_partitions=cfg["partition_prices"],
                   store_types=store.get("type"), store_partitions=store.get("partition"),
                   cpu_core_hour=cfg["usage.cpu_core_hour_price"])

    def gpu_rate(self, gpu_type: str | None, partition: str | None = None) -> Rate:
        k = (gpu_type, partition)
        rate = self._rates.get(k)
        if rate is None:
            rate = self._rates[k] = self._lookup(gpu_type, partition)
        return rate

    def _lookup(self, gpu_type: str | None, partition: str | None) -> Rate:
        key = (gpu_type or "").lower()
        canon = self.catalog.canonical(key) if key else None
        name = canon or key
        if name:
            if name in self.store_types:
                return Rate(self.store_types[name], "store", canon)
            if name in self.config_types:
                return Rate(self.config_types[name], "config", canon)
            spec = self.catalog.spec(name)
            if spec is not None and spec.price is not None:
                return Rate(float(spec.price), "catalog", canon)
        part = (partition or "").lower()
        if part in self.store_partitions:
            return Rate(self.store_partitions[part], "partition", canon)
        if part in self.config_partitions:
            return Rate(self.config_partitions[part], "partition", canon)
        return Rate(self.fallback, "fallback", canon)


class PriceBook:
    """Prices per cluster: one config and catalog, plus each cluster's stored
    overrides ({cluster: {"type": {...}, "partition": {...}, "catalog": {...}}},
    store/overrides.py). Built per command run; nothing global."""

    __slots__ = ("cfg", "catalog", "overrides", "_by_cluster")

    def __init__(self, cfg, catalog: Catalog, overrides: Mapping[str, Mapping[str, Mapping]] | None = None):
        self.cfg, self.catalog, self.overrides = cfg, catalog, dict(overrides or {})
        self._by_cluster: dict[str, Prices] = {}

    def catalog_for(self, cluster: str) -> Catalog:
        return self.for_cluster(cluster).catalog

    def for_cluster(self, cluster: str) -> Prices:
        p = self._by_cluster.get(cluster)
        if p is None:
            ov = self.overrides.get(cluster) or {}
            cat = self.catalog.with_overrides(dict(ov["catalog"])) if ov.get("catalog") else self.catalog
            p = self._by_cluster[cluster] = Prices.from_config(self.cfg, cat, ov)
        return p
