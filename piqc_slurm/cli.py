"""The `piqc-slurm` command line: click only, no logic.

Every error a person can cause surfaces here as one line, `piqc-slurm:
message`, with the exit code of its PiqcError class (2 usage/config, 3 store,
4 sacct/parse, 5 spool, 6 mail); a broken pipe is quiet and ^C exits 130.

The slurmd hooks call `piqc-slurm prolog` / `piqc-slurm epilog` with nothing
else on the line: that path skips click entirely (the Prolog delays the job,
and importing click alone costs ~30 ms) and always exits 0.
"""

from __future__ import annotations

import sys

HOOK_VERBS = ("prolog", "epilog")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 1 and argv[0] in HOOK_VERBS:
        from piqc_slurm.hooks import run_hook

        sys.exit(run_hook(argv[0]))
    _run_click(argv)


def _run_click(argv: list[str]) -> None:
    import click

    from piqc_slurm.errors import PiqcError

    try:
        cli.main(args=argv, prog_name="piqc-slurm", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        sys.exit(130)
    except PiqcError as exc:
        print(f"piqc-slurm: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        # Quiet on `piqc-slurm sacct | head`; keep the interpreter from
        # complaining while flushing a closed stdout at exit.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)
    sys.exit(0)


def _build_cli():
    import click

    from piqc_slurm import __version__

    @click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
    @click.version_option(__version__, "-V", "--version", prog_name="piqc-slurm")
    @click.option("--config", "config_path", metavar="PATH", envvar=None,
                  help="Config file (else $PIQC_CONFIG, else /etc/piqc/piqc.toml, else built-in defaults).")
    @click.option("--db", metavar="URL",
                  help="Store URL, e.g. sqlite:////var/lib/piqc/piqc.db or "
                       "postgresql+psycopg://piqc@dbhost/piqc (else $PIQC_DB, else the config's db).")
    @click.pass_context
    def cli(ctx: click.Context, config_path: str | None, db: str | None) -> None:
        """Make the GPU spend of Slurm batch jobs visible.

        \b
        On every GPU node, slurmd's Prolog and Epilog run `piqc-slurm prolog|epilog`
        (see epilog/): a sampler records each job's GPU use through NVML.
        On the head node, nightly:
          piqc-slurm ingest     # sacct records + sampler summaries -> the store
          piqc-slurm analyze    # cost, waste findings, idle gaps
          piqc-slurm digest -o digest.html
        (`piqc-slurm nightly` runs ingest, analyze, gaps and digest under a lock: deploy/.)
        Any time:
          piqc-slurm sacct -u alice -S 2026-11-01 -o JobID,AllocGPUs,GPUUtilAvg,CostUSD
          piqc-slurm seff 1234

        Run `piqc-slurm COMMAND --help` for each command.
        """
        ctx.obj = {"config_path": config_path, "db": db}


    @cli.command()
    def prolog() -> None:
        """Run as slurmd's Prolog: start the job's GPU sampler. Always exits 0."""
        from piqc_slurm.hooks import run_hook

        sys.exit(run_hook("prolog"))

    @cli.command()
    def epilog() -> None:
        """Run as slurmd's Epilog: stop the sampler, spool and deliver the summary. Always exits 0."""
        from piqc_slurm.hooks import run_hook

        sys.exit(run_hook("epilog"))

    from piqc_slurm.commands import (
        admin,
        analyze,
        costs,
        db,
        digest,
        gaps,
        ingest,
        load_config,
        nightly,
        notify,
        seff,
        simulate,
        spool,
        store_url,
    )
    from piqc_slurm.query.command import add_sacct_command

    ingest.register(cli)
    add_sacct_command(cli, load_config, store_url)
    seff.register(cli)
    costs.register(cli)
    gaps.register(cli)
    analyze.register(cli)
    digest.register(cli)
    notify.register(cli)
    nightly.register(cli)
    simulate.register(cli)
    admin.register(cli)
    spool.register(cli)
    db.register(cli)
    return cli



class _LazyCli:
    """Build the click group on first use, so `import piqc_slurm.cli` stays cheap."""

    _cli = None

    def __getattr__(self, name):
        if _LazyCli._cli is None:
            _LazyCli._cli = _build_cli()
        return getattr(_LazyCli._cli, name)

    def __call__(self, *args, **kwargs):
        return self.__getattr__("__call__")(*args, **kwargs)


cli = _LazyCli()
