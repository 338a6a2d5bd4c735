"""Helpers every command shares: the config, the store URL, sacct-style times."""

from __future__ import annotations

import click


def load_config(ctx: click.Context):
    from piqc_slurm import config

    return config.load(ctx.obj["config_path"], ctx.obj["db"])

def store_url(ctx: click.Context, cfg) -> str:
    from piqc_slurm import config

    if cfg["db"]:
        return cfg["db"]
    url, note = config.default_db_url()
    if note:
        click.echo(f"piqc-slurm: {note}", err=True)
    return url

def when(value: str | None) -> int | None:
    from piqc_slurm.timespec import parse_timespec

    return None if value is None else parse_timespec(value)

def open_store(ctx: click.Context, cfg):
    from piqc_slurm.store import open_engine

    return open_engine(store_url(ctx, cfg))

