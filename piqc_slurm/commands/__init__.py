"""Helpers every command shares: the config, the store URL, sacct-style times."""

from __future__ import annotations

import click


def load_config(ctx: click.Context):
    from piqc_slurm import config

    return config.load(ctx.obj["config_path"], ctx.obj["db"])

def store_url(ctx: click.Context, cfg) -> str:
    """--db, $PIQC_DB or the config's db; else the system store where it exists (a user who
    may only read it reads it), else config.default_db_url()."""
    import os

    from piqc_slurm import config

    if cfg["db"]:
        return cfg["db"]
    system = os.path.join(config.DEFAULT_DB_DIR, "piqc.db")
    if os.path.exists(system):
        return f"sqlite:///{system}"
    url, note = config.default_db_url()
    if note:
        click.echo(f"piqc-slurm: {note}", err=True)
    return url

def when(value: str | None) -> int | None:
    from piqc_slurm.timespec import parse_timespec

    return None if value is None else parse_timespec(value)

def open_store(ctx: click.Context, cfg, mode: str):
    """The store's engine for `mode`: read (never writes or migrates), write (an existing store,
    migrated to head), create (also makes a missing SQLite store, group store_group); see
    piqc_slurm/store/db.py."""
    from piqc_slurm.store.db import open_engine

    return open_engine(store_url(ctx, cfg), mode=mode, group=cfg["store_group"])



def sreport_window(f):
    """-S/-E with sreport's default window (00:00 yesterday to 00:00 today), sacct's time formats."""
    f = click.option("-E", "--until", "--endtime", "until", metavar="TIME",
                     help="Window end. Default: 00:00 today.")(f)
    return click.option("-S", "--since", "--starttime", "since", metavar="TIME",
                        help="Window start, sacct time formats (2026-11-01, now-7days, midnight). "
                             "Default: 00:00 yesterday, as sreport.")(f)


def sreport_times(since: str | None, until: str | None) -> tuple[int, int]:
    """sreport_window's -S/-E as epoch seconds (defaults: 00:00 yesterday, 00:00 today); a usage
    error unless the start is before the end."""
    from piqc_slurm.timespec import parse_timespec, start_of_today

    today = start_of_today()
    e = parse_timespec(until) if until else today
    s = parse_timespec(since) if since else today - 86400
    if s >= e:
        raise click.UsageError(f"--since ({since or 'yesterday 00:00'}) must be before --until "
                               f"({until or 'today 00:00'})")
    return s, e


def parsable_output(f):
    """-P / -p / -n as sacct and sreport print them."""
    f = click.option("-n", "--noheader", is_flag=True, help="No header line.")(f)
    f = click.option("-p", "--parsable", "mode", flag_value="p", help="Each field followed by |.")(f)
    return click.option("-P", "--parsable2", "mode", flag_value="P", help="Fields separated by |, no trailing |.")(f)
