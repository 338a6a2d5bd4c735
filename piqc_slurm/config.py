"""Configuration: TOML, decoded strictly against one schema.

Search order (first found wins): `--config PATH`, `$PIQC_CONFIG`,
/etc/piqc/piqc.toml, built-in defaults.  The store URL has its own order:
`--db URL`, `$PIQC_DB`, the config's `db`, then SQLite under /var/lib/piqc
(falling back to the user's data dir, with a message, when that is not
writable).

An unknown key or a value of the wrong type is a ConfigError naming the file,
the key and what was expected: a typo in a site config must never silently
fall back to a default.  The schema below is the single source of truth for
the defaults, `config show`, the example config and the docs (a test checks
that each key is documented in both).
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from pathlib import Path
from typing import Any, NamedTuple

from piqc_slurm.errors import ConfigError

SYSTEM_CONFIG = "/etc/piqc/piqc.toml"
DEFAULT_DB_DIR = "/var/lib/piqc"


class Setting(NamedTuple):  # not a dataclass: `dataclasses` costs the Prolog ~6 ms of imports
    type: type | tuple[type, ...]
    default: Any
    doc: str
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    item: type = str  # a list's items: str, or float (numbers >= minimum)


# Top-level keys, then one table per section.  Types: str, bool, int, float
# (an int is accepted where a float is expected), list (of str, or of numbers: item=float), dict.
SCHEMA: dict[str, dict[str, Setting] | Setting] = {
    "cluster": Setting(str, "", "Cluster name; empty: SLURM_CLUSTER_NAME in hooks, else sacct's."),
    "db": Setting(str, "", "SQLAlchemy URL of the store; empty: sqlite under /var/lib/piqc."),
    "store_group": Setting(str, "", "Group of a SQLite store piqc-slurm creates (file 0640, new directories "
                           "0750): its members may read it; empty: the creator's primary group."),
    "spool_dir": Setting(str, "/var/spool/piqc", "Node-local spool of sampler state and summaries (root-only); "
                         "%n is this node's name (SLURMD_NODENAME), for a host that runs several slurmd."),
    "delivery": Setting(str, "shared-spool", "How the Epilog delivers a summary after spooling it.",
                        choices=("push", "shared-spool", "spool-only")),
    "shared_spool_dir": Setting(str, "", "With delivery = shared-spool: the shared directory ingest reads."),
    "log_level": Setting(str, "info", "Least severe message logged.",
                         choices=("debug", "info", "warning", "error")),
    "syslog": Setting(bool, True, "Log hook and sampler messages to syslog (facility daemon)."),
    "sampler": {
        "enabled": Setting(bool, True, "Start a sampler for GPU jobs at all."),
        "interval": Setting(float, 1.0, "Seconds between NVML samples.", minimum=0.1),
        "min_interval": Setting(float, 1.0, "Site minimum: a user's --gpu-monitor=SECONDS is clamped up to it.",
                                minimum=0.1),
        "max_interval": Setting(float, 300.0, "Site maximum for a user's interval.", minimum=1.0),
        "allow_opt_out": Setting(bool, True, "Honour a user's --gpu-monitor=off."),
        "process_interval": Setting(float, 10.0, "Seconds between running-process queries (a costly call).",
                                    minimum=1.0),
        "checkpoint_interval": Setting(float, 30.0, "Seconds between checkpoints to the spool.", minimum=1.0),
        "timeline_bin": Setting(int, 60, "Seconds per timeline bin kept for charts.", minimum=1),
        "active_util": Setting(float, 5.0, "Utilization (%) at or above which a sample counts as active.",
                               minimum=0.0),
        "orphan_check": Setting(float, 30.0, "Seconds between checks that the job still exists (its slurmstepd); "
                                "gone at two checks in a row: final checkpoint, partial summary, exit.", minimum=1.0),
        "max_device_errors": Setting(int, 5, "NVML errors in a row (other than GPU lost) after which a GPU counts "
                                     "as lost; fewer are retried with backoff.", minimum=1),
    },
    "watch": {
        "enabled": Setting(bool, True, "Run the live rules in the sampler (sampler/watch.py): a notice while the "
                           "job runs, a syslog line, rule states in the textfile."),
        "idle_minutes": Setting(float, 30.0, "IDLE_GPUS live: every GPU of the job idle (usage.min_active_share "
                                "rule) this many minutes; 0: off.", minimum=0.0),
        "gpu_idle_minutes": Setting(float, 60.0, "IDLE_GPU live: one GPU idle this many minutes while another "
                                    "works; 0: off.", minimum=0.0),
        "underbatched_minutes": Setting(float, 60.0, "UNDER_BATCHED live: the analyze rules' under-batching "
                                        "evidence over the last this many minutes; 0: off.", minimum=0.0),
        "notices": Setting(bool, True, "Append a notice to the job's output file (as the user) when a rule "
                           "fires."),
        "mail": Setting(bool, False, "Also mail each notice to the job's user through mail_prog."),
        "mail_prog": Setting(str, "/bin/mail", "The mail command, run as `mail_prog -s SUBJECT USER` with the notice "
                             "on stdin, as slurmctld runs Slurm's MailProg (set it to your MailProg)."),
        "allow_opt_out": Setting(bool, True, "Honour a user's --gpu-monitor=...,nowatch (no live rules, notices or "
                                 "cancel policy for that job; the sampling goes on)."),
        "textfile_dir": Setting(str, "", "node_exporter textfile-collector directory for live per-GPU metrics "
                                "(piqc_job_<job>.prom); empty: off."),
        "textfile_interval": Setting(float, 15.0, "Seconds between textfile rewrites.", minimum=1.0),
        "cancel_after_minutes": Setting(float, 0.0, "Opt-in: scancel a job whose rule (of cancel_rules) has held "
                                        "this many minutes; 0: never.", minimum=0.0),
        "cancel_rules": Setting(list, ["IDLE_GPUS"], "The live rules that may cancel a job (of IDLE_GPUS, IDLE_GPU, "
                                "UNDER_BATCHED; others are ignored)."),
        "cancel_warn_minutes": Setting(list, [15.0, 5.0], "Warnings (notice and line) this many minutes before the "
                                       "cancel.", minimum=0.0, item=float),
        "cancel_dry_run": Setting(bool, False, "Log what the cancel policy would do; warn and cancel nothing."),
        "exempt_users": Setting(list, [], "Users whose jobs are never warned or cancelled."),
        "exempt_accounts": Setting(list, [], "Accounts whose jobs are never warned or cancelled."),
        "exempt_partitions": Setting(list, [], "Partitions whose jobs are never warned or cancelled."),
        "exempt_qos": Setting(list, [], "QOS whose jobs are never warned or cancelled (asked of squeue by the "
                              "Prolog, off the job's path, only when this list and the cancel policy are set)."),
    },
    "epilog": {
        "flush_timeout": Setting(float, 5.0, "Seconds the Epilog waits for the sampler's final flush.",
                                 minimum=0.0),
        "user_report": Setting(bool, True, "Append a short GPU report to the job's output file."),
        "report_timeout": Setting(float, 3.0, "Seconds the report writer may take (hung file systems).",
                                  minimum=0.1),
        "report_wait": Setting(float, 5.0, "A job on several nodes: seconds the batch host's Epilog waits for the "
                               "other nodes' summaries in the shared spool, to report on all its GPUs.",
                               minimum=0.0),
        "push_connect_timeout": Setting(float, 3.0, "Seconds to connect to the store with delivery = push.",
                                        minimum=0.1),
        "push_jitter": Setting(float, 2.0, "Random delay (s) before a push, to spread a wave of Epilogs.",
                               minimum=0.0),
        "push_detached": Setting(bool, True, "With delivery = push: push from a detached process once the "
                                 "summary is spooled, so slurmd frees the node without waiting on the store."),
        "retry_backlog": Setting(int, 5, "After delivering its own summary, the Epilog retries at most this many "
                                 "older outbox summaries (oldest first, within its time); 0: never.", minimum=0),
    },
    "spool": {
        "retention_days": Setting(int, 30, "`spool prune` deletes delivered, taken-in and quarantined spool files "
                                  "older than this many days (never one the store lacks); 0: never.", minimum=0),
    },
    "usage": {
        "min_active_share": Setting(float, 0.05, "Share of its sampled time a GPU must be active (utilization at "
                                    "or above sampler.active_util) to have done work.", minimum=0.0),
        "cpu_core_hour_price": Setting(float, 0.0, "USD per allocated CPU core-hour of a CPU-only job (0: CPU jobs "
                                       "cost nothing; GPU jobs are priced by their GPUs alone).", minimum=0.0),
    },
    "analyze": {
        "min_elapsed": Setting(float, 10.0, "Seconds a GPU job must run before per-GPU findings (and NO_SAMPLES) "
                               "apply: ten samples at the default interval.", minimum=0.0),
        "ub_sm_max": Setting(float, 0.5, "UNDER_BATCHED by GPM: mean SM activity of the working GPUs below this "
                             "(NVIDIA: < 0.5 likely ineffective use).", minimum=0.0),
        "ub_power_max": Setting(float, 0.5, "UNDER_BATCHED by power (no GPM): mean power / power limit below this ...",
                                minimum=0.0),
        "ub_power_util_min": Setting(float, 50.0, "... while utilization.gpu is at least this (%: kernels run).",
                                     minimum=0.0),
        "ub_util_max": Setting(float, 30.0, "UNDER_BATCHED by utilization (no GPM, no power): utilization below "
                               "this (%) ...", minimum=0.0),
        "ub_mem_free_min": Setting(float, 0.5, "... with at least this share of GPU memory free.", minimum=0.0),
        "target_sm": Setting(float, 0.8, "Target SM activity: the saving of UNDER_BATCHED by GPM is cost x "
                             "(1 - activity / target).", minimum=0.01),
        "target_power": Setting(float, 0.7, "Target power share, for UNDER_BATCHED by power.", minimum=0.01),
        "target_util": Setting(float, 75.0, "Target utilization (%), for UNDER_BATCHED by utilization and "
                               "INPUT_BOUND (jobstats' mail quotes 75%).", minimum=1.0),
        "ib_cpu_eff_min": Setting(float, 0.85, "INPUT_BOUND: the job's CPUs busy at least this share "
                                  "(TotalCPU / (Elapsed x AllocCPUS)) ...", minimum=0.0),
        "ib_util_max": Setting(float, 50.0, "... or waiting, while utilization of the working GPUs is below this (%).",
                               minimum=0.0),
        "ib_idle_share_min": Setting(float, 0.4, "INPUT_BOUND by waits: working GPUs idle at least this share of the "
                                     "time, between bursts.", minimum=0.0),
        "wt_min_saving": Setting(float, 0.3, "WRONG_TIER only when the cheaper type saves at least this share.",
                                 minimum=0.0),
        "wt_mem_headroom": Setting(float, 0.2, "WRONG_TIER: the cheaper type's memory must hold the peak x (1 + this).",
                                   minimum=0.0),
        "wt_demand_headroom": Setting(float, 0.25, "WRONG_TIER: its compute and bandwidth must cover the demand x "
                                      "(1 + this).", minimum=0.0),
        "wt_sm_max": Setting(float, 0.5, "WRONG_TIER by GPM only when SM activity is below this (the job uses a "
                             "fraction of the card).", minimum=0.0),
        "wt_candidates": Setting(str, "site", "GPU types WRONG_TIER may advise: `site` (types in the cluster's node "
                                 "inventory; the catalog where it is empty) or `catalog`.",
                                 choices=("site", "catalog")),
        "regression_ratio": Setting(float, 1.5, "RUNTIME_REGRESSION: elapsed or cost at least this times the median "
                                    "of the recurring job's earlier completed runs.", minimum=1.0),
        "regression_min_runs": Setting(int, 3, "... given at least this many earlier completed runs.", minimum=1),
        "history_days": Setting(int, 28, "Days before the window read for the recurring jobs' earlier runs.",
                                minimum=0),
        "recoverable_days": Setting(int, 28, "Trailing window (days) of the recoverable-per-year figures.",
                                    minimum=1),
        "parallel": Setting(bool, True, "A window of 50,000 jobs or more is loaded and explained on two CPU "
                            "cores (forked child processes); false: one process."),
    },
    # Tables of their own: [prices] h100 = 4.0 ... ; the catalog's dated prices fill the rest.
    "prices": Setting(dict, {}, "USD per GPU-hour by GPU type (`h100 = 4.0`, a catalog type or gres name); "
                      "`default` replaces the catalog's fallback for unknown types."),
    "partition_prices": Setting(dict, {}, "USD per GPU-hour by partition, for jobs whose GPU type is unknown "
                                "(an untyped gres); a known type's price wins."),
    "access": {
        "admin_users": Setting(list, ["root"], "Users who see every job in `sacct`/`seff`."),
        "admin_groups": Setting(list, [], "Groups whose members see every job."),
    },
    "mail": {
        "host": Setting(str, "", "SMTP server for the digest's --mail-to and notify-users --send; empty: "
                        "nothing is ever sent."),
        "port": Setting(int, 587, "SMTP port (587: submission with STARTTLS; 25: a local relay).", minimum=1),
        "starttls": Setting(bool, True, "Upgrade the connection with STARTTLS before sending (a server that "
                            "does not offer it is an error, nothing is sent in clear)."),
        "username": Setting(str, "", "SMTP login; empty: no login."),
        "password_file": Setting(str, "", "File holding the SMTP password (its first line), read at send "
                                 "time; refused unless owned by root or the user running piqc-slurm and "
                                 "readable by its owner only (chmod 600)."),
        "from": Setting(str, "", "Sender address; empty: piqc-slurm@ this host's FQDN."),
        "timeout": Setting(float, 30.0, "Seconds to connect to, and wait for, the SMTP server.", minimum=1.0),
    },
    "notify": {
        "threshold_usd": Setting(float, 50.0, "notify-users: a user gets a note when the waste of their jobs in "
                                 "the window reaches this (USD).", minimum=0.0),
        "period_days": Setting(int, 7, "At most one note per user per this many days (recorded in the store); "
                               "also notify-users' default window.", minimum=1),
        "top_jobs": Setting(int, 5, "Jobs a note lists: the user's costliest by waste.", minimum=1),
        "opt_out": Setting(list, [], "Users never sent a note."),
        "domain": Setting(str, "", "Mail domain: a user's address is USER@domain; empty: --send refuses "
                          "(the dry run still writes the notes)."),
        "subject": Setting(str, "Your GPU jobs: ${waste} of GPU time to save",
                           "Subject of a note; {user}, {waste} and {days} are replaced."),
        "from": Setting(str, "", "Sender of the notes; empty: mail.from."),
    },
}


class Config:
    __slots__ = ("values", "origins", "path")

    def __init__(self, values: dict[str, Any], origins: dict[str, str] | None = None, path: str | None = None):
        self.values, self.origins, self.path = values, origins or {}, path

    def get(self, dotted: str) -> Any:
        return self.values[dotted]

    def __getitem__(self, dotted: str) -> Any:
        return self.values[dotted]


def iter_schema():
    """(dotted key, Setting) for every key, in schema order."""
    for key, val in SCHEMA.items():
        if isinstance(val, Setting):
            yield key, val
        else:
            for sub, setting in val.items():
                yield f"{key}.{sub}", setting


def defaults() -> dict[str, Any]:
    return {k: s.default for k, s in iter_schema()}


def _type_name(t: type | tuple[type, ...]) -> str:
    names = {str: "a string", bool: "true or false", int: "an integer", float: "a number",
             list: "a list of strings", dict: "a table"}
    return names.get(t, str(t)) if isinstance(t, type) else " or ".join(_type_name(x) for x in t)


def _show(value: Any) -> str:
    """repr for a message, cut short (a value can be a huge table; int repr stops at 4,300 digits)."""
    try:
        text = repr(value)
    except (ValueError, RecursionError):
        text = f"a {type(value).__name__}"
    return text if len(text) <= 80 else text[:77] + "..."


def _check(path: str, key: str, setting: Setting, value: Any) -> Any:
    t = setting.type
    ok = isinstance(value, t) and not (t is int and isinstance(value, bool))
    if t is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        raise ConfigError(f"{path}: {key}: expected {_type_name(t)}, got {_show(value)}")
    if t is float and not math.isfinite(value):  # TOML has nan and inf; `nan < minimum` is False
        raise ConfigError(f"{path}: {key}: expected a finite number, got {value!r}")
    if t is int and not -2**63 <= value < 2**63:  # TOML integers are 64-bit; beyond, the store cannot hold it
        raise ConfigError(f"{path}: {key}: expected a 64-bit integer, got {_show(value)}")
    if t is list and setting.item is float:
        if not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
                   and (setting.minimum is None or x >= setting.minimum) for x in value):
            low = "" if setting.minimum is None else f" >= {setting.minimum:g}"
            raise ConfigError(f"{path}: {key}: expected a list of numbers{low}, got {_show(value)}")
        return [float(x) for x in value]
    if t is list and not all(isinstance(x, str) for x in value):
        raise ConfigError(f"{path}: {key}: expected a list of strings, got {value!r}")
    if setting.choices and value not in setting.choices:
        raise ConfigError(f"{path}: {key}: expected one of {', '.join(setting.choices)}, got {value!r}")
    if setting.minimum is not None and value < setting.minimum:
        raise ConfigError(f"{path}: {key}: expected at least {setting.minimum:g}, got {value!r}")
    if key == "mail.port" and value > 65535:
        raise ConfigError(f"{path}: {key}: expected a TCP port (1..65535), got {value!r}")
    if key in ("prices", "partition_prices"):
        for gpu, price in value.items():
            # not `price < 0`: nan passes that, and a 400-digit integer would overflow float() below
            if isinstance(price, bool) or not isinstance(price, (int, float)) or not 0 <= price < 1e300:
                where = f"{key}.{gpu}" if str(gpu).isprintable() else f"{key}.{str(gpu)!r}"  # one line
                raise ConfigError(f"{path}: {where}: expected a price in USD per GPU-hour >= 0, "
                                  f"got {_show(price)}")
        value = {str(k).lower(): float(v) for k, v in value.items()}
    return value


def decode(doc: dict[str, Any], path: str) -> dict[str, Any]:
    """Validate a parsed TOML document; return {dotted key: value} for keys it sets."""
    out: dict[str, Any] = {}
    for key, val in doc.items():
        spec = SCHEMA.get(key)
        if spec is None:
            raise ConfigError(f"{path}: unknown key {key!r} (known: {', '.join(SCHEMA)})")
        if isinstance(spec, Setting):
            out[key] = _check(path, key, spec, val)
            continue
        if not isinstance(val, dict):
            raise ConfigError(f"{path}: [{key}]: expected a table, got {_show(val)}")
        for sub, subval in val.items():
            setting = spec.get(sub)
            if setting is None:
                raise ConfigError(f"{path}: unknown key {f'{key}.{sub}'!r} (known in [{key}]: {', '.join(spec)})")
            out[f"{key}.{sub}"] = _check(path, f"{key}.{sub}", setting, subval)
    return out


def find_config_file(explicit: str | None, env: dict[str, str] | None = None) -> tuple[str | None, str]:
    """(path or None, how it was chosen).  An explicitly named file must exist."""
    env = os.environ if env is None else env
    if explicit:
        return explicit, "--config"
    if env.get("PIQC_CONFIG"):
        return env["PIQC_CONFIG"], "$PIQC_CONFIG"
    if os.path.exists(SYSTEM_CONFIG):
        return SYSTEM_CONFIG, SYSTEM_CONFIG
    return None, "built-in defaults"


def load(explicit: str | None = None, db: str | None = None, env: dict[str, str] | None = None) -> Config:
    env = os.environ if env is None else env
    path, how = find_config_file(explicit, env)
    values = defaults()
    origins = {k: "default" for k in values}
    if path is not None:
        try:
            with open(path, "rb") as fh:
                doc = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such config file (named by {how})") from None
        except PermissionError:
            raise ConfigError(f"{path}: permission denied reading the config file") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        except UnicodeDecodeError as exc:  # tomllib decodes the whole file first
            raise ConfigError(f"{path}: not valid TOML: not UTF-8 (byte {exc.start})") from None
        except RecursionError:
            raise ConfigError(f"{path}: not valid TOML: nested too deeply") from None
        except ValueError as exc:  # an integer of 4,300+ digits: int()'s own limit, not a TOMLDecodeError
            raise ConfigError(f"{path}: not valid TOML: {str(exc).split(':')[0]}") from None
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the config file: {exc.strerror}") from None
        for key, val in decode(doc, path).items():
            values[key] = val
            origins[key] = path
    if "%n" in values["spool_dir"]:
        values["spool_dir"] = expand_node(values["spool_dir"], env, path or "config")
    if db:
        values["db"], origins["db"] = db, "--db"
    elif env.get("PIQC_DB"):
        values["db"], origins["db"] = env["PIQC_DB"], "$PIQC_DB"
    return Config(values=values, origins=origins, path=path)


NODE_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")


def node_name(env) -> str:
    """This node's Slurm name: SLURMD_NODENAME (set in every hook, in slurmstepd and in a job's
    tasks; Slurm's clients read it the same way), else the short host name."""
    import socket

    return env.get("SLURMD_NODENAME") or socket.gethostname().split(".", 1)[0]


def expand_node(value: str, env, where: str) -> str:
    """`%n` -> this node's name, as slurm.conf's SlurmdSpoolDir takes %n on a host that runs several
    slurmd (each node its own spool). A name that is not a plain node name is refused."""
    node = node_name(env)
    if not NODE_NAME.fullmatch(node):
        raise ConfigError(f"{where}: spool_dir: %n, but the node name {_show(node)} is not a plain name")
    return value.replace("%n", node)


def default_db_url(uid: int | None = None) -> tuple[str, str | None]:
    """The store URL when none is configured, and a note if it had to fall back."""
    target = Path(DEFAULT_DB_DIR)
    if os.access(target if target.exists() else target.parent, os.W_OK):
        return f"sqlite:///{target / 'piqc.db'}", None
    home = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local/share") / "piqc"
    note = f"{DEFAULT_DB_DIR} is not writable: using {home / 'piqc.db'} (set db in the config or --db)"
    return f"sqlite:///{home / 'piqc.db'}", note


def to_toml(cfg: Config, with_origins: bool = True) -> str:
    """The effective configuration as TOML, each value commented with its origin."""
    import tomli_w

    lines: list[str] = []
    tables: list[str] = []
    section = None
    for key, _setting in iter_schema():
        sect, _, name = key.rpartition(".")
        origin = f"  # {cfg.origins.get(key, 'default')}" if with_origins else ""
        if isinstance(cfg[key], dict):  # a top-level free-form table goes last
            tables.append(f"\n[{key}]{origin}")
            tables.extend(tomli_w.dumps({k: v}).strip() for k, v in cfg[key].items())
            continue
        if sect != section and sect:
            lines.append(f"\n[{sect}]")
            section = sect
        value = cfg[key]
        if isinstance(value, list):  # one line, not tomli-w's one-item-per-line arrays
            rendered = f"{name or key} = [{', '.join(tomli_w.dumps({'x': v})[4:].strip() for v in value)}]"
        else:
            rendered = tomli_w.dumps({name or key: value}).strip()
        lines.append(rendered + origin)
    return "\n".join(lines + tables).lstrip() + "\n"
