"""The store: SQLAlchemy engine, schema migrations, and the writes the node
agent needs (push_summary). SQLite on one host, PostgreSQL for a cluster;
the same code and tests run on both."""

from __future__ import annotations

from piqc_slurm.store.db import migrate, open_engine  # noqa: F401
from piqc_slurm.store.summaries import push_summary, upsert_summary  # noqa: F401
