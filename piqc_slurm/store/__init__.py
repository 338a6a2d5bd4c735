"""The store: SQLAlchemy engine, schema migrations, and the writes the node
agent needs (push_summary). SQLite on one host, PostgreSQL for a cluster;
the same code and tests run on both.

The names below load on first use, so a reader that needs only a
SQLAlchemy-free module (store/overrides.py's load_overrides, used by the
fast `sacct` path) does not pay for SQLAlchemy's import."""

from __future__ import annotations

_LAZY = {"migrate": "piqc_slurm.store.db", "open_engine": "piqc_slurm.store.db",
         "push_summary": "piqc_slurm.store.summaries", "upsert_summary": "piqc_slurm.store.summaries"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(name)


__all__ = list(_LAZY)
