"""Per-cluster price and catalog overrides kept in the store (simulate writes a
scenario's; a site may write its own by SQL). Read by every command that
prices a job, through usage.prices.PriceBook."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

_PRICES_SQL = 'SELECT "cluster", "kind", "key", "usd" FROM price_overrides'
_CATALOG_SQL = 'SELECT "cluster", "gpu_type", "spec" FROM catalog_overrides'


def load_overrides(fetch_all: Callable[[str], Sequence[Sequence[Any]]]) -> dict[str, dict[str, dict]]:
    """{cluster: {"type": {key: usd}, "partition": {key: usd}, "catalog": {type: spec}}}.

    fetch_all(sql) -> rows: a Reader's `all`, or a Session's execute."""
    out: dict[str, dict[str, dict]] = {}
    for cluster, kind, key, usd in fetch_all(_PRICES_SQL):
        out.setdefault(cluster, {}).setdefault(kind, {})[key] = float(usd)
    for cluster, gpu_type, spec in fetch_all(_CATALOG_SQL):
        out.setdefault(cluster, {}).setdefault("catalog", {})[gpu_type] = (
            json.loads(spec) if isinstance(spec, str) else spec)
    return out


def session_fetch(session) -> Callable[[str], list]:
    """fetch_all for load_overrides over a SQLAlchemy Session."""
    from sqlalchemy import text

    return lambda sql: [tuple(r) for r in session.execute(text(sql))]


def replace_overrides(session, cluster: str, *, types: Mapping[str, float] | None = None,
                      partitions: Mapping[str, float] | None = None,
                      catalog: Mapping[str, Mapping[str, Any]] | None = None) -> None:
    """Set one cluster's overrides to exactly these (a scenario loaded again replaces its own)."""
    from sqlalchemy import delete

    from piqc_slurm.store.models import CatalogOverride, PriceOverride

    session.execute(delete(PriceOverride).where(PriceOverride.cluster == cluster))
    session.execute(delete(CatalogOverride).where(CatalogOverride.cluster == cluster))
    for kind, table in (("type", types or {}), ("partition", partitions or {})):
        for key, usd in table.items():
            session.add(PriceOverride(cluster=cluster, kind=kind, key=str(key).lower(), usd=float(usd)))
    for gpu_type, spec in (catalog or {}).items():
        session.add(CatalogOverride(cluster=cluster, gpu_type=str(gpu_type).lower(), spec=dict(spec)))
