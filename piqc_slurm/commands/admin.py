"""`piqc-slurm doctor` and `piqc-slurm config show`: checks and the effective configuration."""

from __future__ import annotations

import sys

import click

from piqc_slurm.commands import load_config, store_url


def register(group: click.Group) -> None:
    @group.command()
    @click.pass_context
    def doctor(ctx: click.Context) -> None:
        """Check NVML, the spool, hook wiring in slurm.conf, the SPANK plugin,
        the store and sacct; say what to fix. Exit 1 if anything FAILs.

        \b
        Run it on a GPU node as root (NVML, spool, hooks) and on the head node
        (store, sacct). SLURM_CONF selects the slurm.conf to inspect.
        """
        from piqc_slurm.doctor import FAIL, run_all

        cfg = load_config(ctx)
        checks = run_all(cfg, store_url(ctx, cfg))
        for c in checks:
            click.echo(f"{c.status:<4}  {c.name:<12} {c.what}")
            if c.fix and c.status != "OK":
                click.echo(f"      {'':<12} fix: {c.fix}")
        sys.exit(1 if any(c.status == FAIL for c in checks) else 0)


    @group.group("config")
    def config_group() -> None:
        """Inspect the configuration."""

    @config_group.command("show")
    @click.option("--no-origins", is_flag=True, help="Leave out the comments saying where each value came from.")
    @click.pass_context
    def config_show(ctx: click.Context, no_origins: bool) -> None:
        """Print the effective configuration as TOML, with where each value came from."""
        from piqc_slurm import config

        cfg = load_config(ctx)
        where = cfg.path or "built-in defaults (no config file found)"
        click.echo(f"# piqc-slurm effective configuration; file: {where}")
        click.echo(config.to_toml(cfg, with_origins=not no_origins), nl=False)

