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


# Each command's module (under piqc_slurm.commands; "query.command" for sacct). A lazy group (the one
# `piqc-slurm` runs) imports only the module of the command invoked: `piqc-slurm sacct` then skips
# ingest, nightly, digest, ... (~5 ms of its ~75: bench/bench_cluster.py). tests/unit/test_cli_lazy.py
# keeps this map equal to what the modules register.
COMMAND_MODULES = {
    "analyze": "analyze", "config": "admin", "costs": "costs", "db": "db", "digest": "digest", "doctor": "admin",
    "gaps": "gaps", "ingest": "ingest", "nightly": "nightly", "notify-users": "notify", "sacct": "query.command",
    "seff": "seff", "simulate": "simulate", "spool": "spool",
}


def _register(group, module: str) -> None:
    """Add the commands of one module to the group (once)."""
    loaded = group.__dict__.setdefault("_piqc_loaded", set())
    if module in loaded:
        return
    loaded.add(module)
    from importlib import import_module

    from piqc_slurm.commands import load_config, store_url

    if module == "query.command":
        from piqc_slurm.query.command import add_sacct_command

        add_sacct_command(group, load_config, store_url)
    else:
        import_module(f"piqc_slurm.commands.{module}").register(group)


def _build_cli(lazy: bool = False):
    """The click group: every command registered, or (lazy) each on first use."""
    import click

    from piqc_slurm import __version__

    class LazyGroup(click.Group):
        def get_command(self, ctx, cmd_name):
            if cmd_name not in self.commands and cmd_name in COMMAND_MODULES:
                _register(self, COMMAND_MODULES[cmd_name])
            return super().get_command(ctx, cmd_name)

        def list_commands(self, ctx):
            for module in dict.fromkeys(COMMAND_MODULES.values()):
                _register(self, module)
            return super().list_commands(ctx)

    @click.group(cls=LazyGroup if lazy else click.Group,
                 context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
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

    if not lazy:
        for module in dict.fromkeys(COMMAND_MODULES.values()):
            _register(cli, module)
    return cli



class _LazyCli:
    """Build the click group on first use, so `import piqc_slurm.cli` stays cheap."""

    _cli = None

    def __getattr__(self, name):
        if _LazyCli._cli is None:
            _LazyCli._cli = _build_cli(lazy=True)
        return getattr(_LazyCli._cli, name)

    def __call__(self, *args, **kwargs):
        return self.__getattr__("__call__")(*args, **kwargs)


cli = _LazyCli()
