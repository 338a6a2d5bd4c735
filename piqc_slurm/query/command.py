"""The click command `piqc-slurm sacct`. cli.py wires it in:

    from piqc_slurm.query.command import add_sacct_command
    add_sacct_command(cli, load_config, store_url)

where `load_config(ctx)` returns the Config and `store_url(ctx, cfg)` the
store URL. Importing this module costs click only; the query machinery is
imported when the command runs. See piqc_slurm/query/README.md for the
flags, the fields, the JSON shape and what differs from real sacct."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

_EPILOG = """\b
Examples:
  piqc-slurm sacct -u alice -S 2026-11-01 -o JobID,AllocGPUs,GPUUtilAvg,CostUSD
  piqc-slurm sacct -j 1234,1240_3 -P -o JobID,State,Elapsed,GPUsUsed
  piqc-slurm sacct -s F,TO,OOM -S now-7days -E now --json
Without -X each job's step lines (.batch, .extern, .0 ...) follow it, as sacct prints them.
Fields: `piqc-slurm sacct -e`."""


def _record(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Note -a and -u in the order given: in sacct the later of the two wins."""
    if param.name == "allusers" and value:
        ctx.meta.setdefault("piqc_users_order", []).append(("a", ""))
    elif param.name == "users":
        for v in value or ():
            ctx.meta.setdefault("piqc_users_order", []).append(("u", v))
    return value


def add_sacct_command(group: click.Group, load_config: Callable[[click.Context], Any],
                      store_url: Callable[[click.Context, Any], str]) -> click.Command:
    """Add `sacct` to `group`; returns the command."""

    @group.command("sacct", epilog=_EPILOG,
                   context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
    @click.option("-j", "--jobs", "jobs", multiple=True, metavar="JOB[,JOB...]",
                  help="Jobs: 1234, 1234_5 (array task), 1234+1 (het component); a step id selects its job. "
                       "Without -S: every time.")
    @click.option("-u", "--user", "--uid", "users", multiple=True, metavar="USER[,USER...]", callback=_record,
                  help="Users (names or uids; -1: all). Non-admins only ever see their own jobs.")
    @click.option("-A", "--accounts", "--account", "accounts", multiple=True, metavar="ACCOUNT[,...]",
                  help="Accounts.")
    @click.option("-r", "--partition", "partitions", multiple=True, metavar="PARTITION[,...]",
                  help="Partitions.")
    @click.option("-s", "--state", "states", multiple=True, metavar="STATE[,...]",
                  help="States, long or short, any case: CA CD F NF OOM PD PR R RQ S TO ... As sacct: "
                       "without -S the window is the instant now; an ended state matches jobs that ended "
                       "in [-S, -E].")
    @click.option("-S", "--starttime", metavar="TIME",
                  help="Window start (sacct formats: 2026-11-28, 2026-11-28T08:00, 11/28, now-2days, midnight, "
                       "08:00 ...). Default 00:00 today; the epoch with -j; now with -s.")
    @click.option("-E", "--endtime", metavar="TIME", help="Window end. Default now (with -s: -S).")
    @click.option("-o", "--format", "--fields", "formats", multiple=True, metavar="FIELD[%N],...",
                  help="Fields, e.g. JobID,JobName%30,State%-20,GPUUtilAvg (-e lists them). "
                       "Default as sacct: JobID, JobName, Partition, Account, AllocCPUS, State, ExitCode.")
    @click.option("-p", "--parsable", "mode", flag_value="p", help="'|'-delimited, with a trailing '|'.")
    @click.option("-P", "--parsable2", "mode", flag_value="P", help="'|'-delimited, no trailing '|'.")
    @click.option("--delimiter", metavar="CHARS", help="Delimiter for -p/-P instead of '|'.")
    @click.option("-n", "--noheader", is_flag=True, help="No header line.")
    @click.option("-X", "--allocations", is_flag=True,
                  help="Only the job allocations: no step lines (.batch, .extern, .0 ...).")
    @click.option("-a", "--allusers", is_flag=True, callback=_record,
                  help="All users' jobs (admins; others see their own).")
    @click.option("-D", "--duplicates", is_flag=True,
                  help="Every record of a requeued or reused job id, not only the newest.")
    @click.option("-M", "--clusters", "clusters", multiple=True, metavar="CLUSTER[,...]",
                  help="Clusters (all: every cluster in the store). Default: the config's cluster, else all.")
    @click.option("-L", "--allclusters", is_flag=True, help="Jobs of every cluster in the store.")
    @click.option("-b", "--brief", is_flag=True, help="Add JobID,State,ExitCode to the fields.")
    @click.option("--json", "as_json", is_flag=True,
                  help="JSON in sacct's own shape (22.05: openapi/dbv0.0.38; meta, errors, jobs[] with "
                       "steps[]), our GPU figures under each job's \"piqc\" key.")
    @click.option("--json-fields", "json_fields", is_flag=True,
                  help='Flat JSON instead: {"jobs": [{FIELD: value, ...}]}, typed values; -o picks the fields.')
    @click.option("-e", "--helpformat", "--help-fields", "helpformat", is_flag=True,
                  help="List the fields with their meaning, and exit.")
    @click.pass_context
    def sacct(ctx: click.Context, **params: Any) -> None:
        """Query jobs like Slurm's sacct, from the store, with GPU use and cost.

        sacct's own flags and fields; for the fields sacct shares, -P and -p output
        is byte for byte what sacct 22.05 prints for the same jobs, and tables have
        its header, widths and alignment.
        """
        if params["helpformat"]:
            from piqc_slurm.query.fields import helpformat

            click.echo(helpformat(), nl=False)
            return
        from piqc_slurm.query.access import Caller
        from piqc_slurm.query.run import Settings, run

        opts = options_from(ctx)
        cfg = load_config(ctx)
        url = store_url(ctx, cfg)
        settings = Settings(config=cfg, admin_users=cfg["access.admin_users"],
                            admin_groups=cfg["access.admin_groups"], cluster=cfg["cluster"])
        import sys

        out = sys.stdout.buffer
        run(opts, url=url, settings=settings, caller=Caller.current(), out=out,
            warn=lambda m: click.echo(m, err=True))
        out.flush()

    return sacct


def options_from(ctx: click.Context):
    """The parsed command line of a `sacct` context as run.Options."""
    from piqc_slurm.query.run import Options

    p = ctx.params
    order = ctx.meta.get("piqc_users_order", [])
    allusers = bool(order) and (order[-1][0] == "a" or order[-1][1] == "-1")
    return Options(jobs=list(p["jobs"]), users=[u for u in p["users"] if u != "-1"],
                   accounts=list(p["accounts"]), partitions=list(p["partitions"]), states=list(p["states"]),
                   starttime=p["starttime"], endtime=p["endtime"], formats=list(p["formats"]),
                   parsable=p["mode"] == "p", parsable2=p["mode"] == "P", noheader=p["noheader"],
                   delimiter=p["delimiter"], json=p["as_json"] or p["json_fields"], json_fields=p["json_fields"],
                   allusers=allusers, duplicates=p["duplicates"],
                   clusters=list(p["clusters"]), allclusters=p["allclusters"], brief=p["brief"],
                   allocations=p["allocations"])


def parse_args(argv: list[str]):
    """sacct-style arguments -> run.Options, without running anything (for tests and tools)."""
    cmd = add_sacct_command(click.Group(), lambda ctx: None, lambda ctx, cfg: "")
    with cmd.make_context("sacct", list(argv)) as ctx:
        return options_from(ctx)
