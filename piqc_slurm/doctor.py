"""`piqc-slurm doctor`: check what the tool depends on, and say what to fix.

Each check returns (status, what, fix): status is OK, WARN or FAIL. Checks
take their system roots as arguments (slurm.conf path, environment) so they
can be pointed at a test cluster. Run as an ordinary user, a check that
meets a root-only file says "cannot read ... (run as root)" as a WARN
instead of failing the run.
"""

from __future__ import annotations

import glob
import os
import re
import shlex
import stat
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

OK, WARN, FAIL = "OK", "WARN", "FAIL"


@dataclass
class Check:
    status: str
    name: str
    what: str
    fix: str = ""


def check_nvml() -> Check:
    try:
        import pynvml
    except ImportError:
        return Check(FAIL, "nvml", "the pynvml module is missing", "pip install nvidia-ml-py")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return Check(WARN, "nvml", f"NVML unavailable: {exc}",
                     "expected on a head node; on a GPU node install the NVIDIA driver (libnvidia-ml.so.1)")
    try:
        n = pynvml.nvmlDeviceGetCount()
        driver = pynvml.nvmlSystemGetDriverVersion()
        driver = driver.decode() if isinstance(driver, bytes) else driver
        names = set()
        for i in range(n):
            name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(i))
            names.add(name.decode() if isinstance(name, bytes) else name)
    finally:
        pynvml.nvmlShutdown()
    fake = " (fake test driver: FAKENVML_CONFIG is set)" if os.environ.get("FAKENVML_CONFIG") else ""
    return Check(OK, "nvml", f"{n} GPU(s) {', '.join(sorted(names))}; driver {driver}{fake}")


def check_spool(spool_dir: str, delivery: str, shared_dir: str, db_url: str = "") -> list[Check]:
    out = []
    p = Path(spool_dir)
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        out.append(Check(WARN, "spool", f"{p} does not exist yet", "the first Prolog creates it (root, 0700)"))
    except PermissionError:
        out.append(_cannot_read("spool", p))
    else:
        problems = []
        if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
            problems.append("not a plain directory")
        if st.st_uid != 0:
            problems.append(f"owned by uid {st.st_uid}, not root")
        if st.st_mode & 0o077:
            problems.append(f"mode {st.st_mode & 0o777:o}, not 700")
        if problems:
            out.append(Check(FAIL, "spool", f"{p}: {', '.join(problems)}", f"chown root:root {p}; chmod 700 {p}"))
        else:
            try:
                waiting = outbox_waiting(p / "outbox", db_url)
            except PermissionError:
                out.append(Check(WARN, "spool", f"{p} root-only; its outbox: cannot read (run as root)",
                                 "run piqc-slurm doctor as root"))
            else:
                out.append(Check(OK, "spool", f"{p} root-only; {waiting}"))
                out.extend(spool_losses(p))
    if delivery == "shared-spool":
        if not shared_dir:
            out.append(Check(FAIL, "shared-spool", "delivery = shared-spool but shared_spool_dir is empty",
                             "set shared_spool_dir in the config"))
        elif os.path.isdir(shared_dir) and os.geteuid() != 0 and not os.access(shared_dir, os.W_OK | os.X_OK):
            out.append(_cannot_read("shared-spool", shared_dir))  # root's Epilog writes there, not us
        elif not os.path.isdir(shared_dir) or not os.access(shared_dir, os.W_OK | os.X_OK):
            out.append(Check(FAIL, "shared-spool", f"{shared_dir} missing or not writable",
                             f"mkdir -p {shared_dir}, on storage every node mounts"))
        else:
            out.append(Check(OK, "shared-spool", f"{shared_dir} writable"))
    return out


def spool_losses(spool: Path) -> list[Check]:
    """WARNs for what the node's spool could not keep or deliver: summaries lost (`lost.count`,
    which the Epilog adds to when the outbox cannot take one: disk full, read-only) and summaries
    set aside in `outbox/quarantine/` (a push could not read them; each has a `.reason`)."""
    out = []
    try:
        raw = (spool / "lost.count").read_text().strip()
    except FileNotFoundError:
        raw = ""
    except PermissionError:
        return [_cannot_read("spool", spool / "lost.count")]
    if raw and raw != "0":
        out.append(Check(WARN, "spool", f"{raw} summar{'y' if raw == '1' else 'ies'} lost: the outbox could not "
                         "take them (syslog: 'lost summary KEY: ...')",
                         f"free space on or remount the spool's file system; the count is cumulative: "
                         f"rm {spool / 'lost.count'} once seen"))
    try:
        held = sorted(e.name for e in os.scandir(spool / "outbox" / "quarantine")
                      if e.name.endswith(".summary.json") and e.is_file(follow_symlinks=False))
    except (FileNotFoundError, NotADirectoryError):
        held = []
    except PermissionError:
        return out + [_cannot_read("spool", spool / "outbox" / "quarantine")]
    if held:
        out.append(Check(WARN, "spool", f"{len(held)} summar{'y' if len(held) == 1 else 'ies'} in "
                         f"{spool / 'outbox' / 'quarantine'} (first: {held[0]})",
                         "read each <name>.reason; fix the file and move it back to the outbox to deliver it"))
    return out


def outbox_waiting(outbox: Path, db_url: str = "") -> str:
    """How many summaries in `outbox` wait for the store, as one phrase. A summary the store has
    already taken in (`ingest --spool` replays the outbox and leaves every file where it is,
    recorded in spool_replays by name and SHA-256) is not waiting, so it is counted apart when the
    store can be read. PermissionError when the outbox cannot be read."""
    import hashlib

    try:
        entries = sorted((e for e in list(os.scandir(outbox)) if e.name.endswith(".summary.json")
                          and not e.name.startswith(".") and e.is_file(follow_symlinks=False)),
                         key=lambda e: e.name)
    except FileNotFoundError:
        return "no outbox yet (no summaries waiting)"
    except NotADirectoryError:
        return f"{outbox} is not a directory"
    if not entries:
        return "0 summaries waiting in outbox"
    known, why = _replayed(db_url, [f"{outbox.name}/{e.name}" for e in entries])
    n = len(entries)
    if known is None:
        return f"{n} summar{'y' if n == 1 else 'ies'} in outbox (not checked against the store: {why})"
    taken = 0
    for e in entries:
        digest = known.get(f"{outbox.name}/{e.name}")
        if digest is not None:
            with open(e.path, "rb") as fh:
                taken += hashlib.sha256(fh.read()).hexdigest() == digest
    left = len(entries) - taken
    return (f"{left} summar{'y' if left == 1 else 'ies'} waiting in outbox"
            + (f" ({taken} more already in the store, left in place after ingest)" if taken else ""))


def _replayed(db_url: str, names: list[str]) -> tuple[dict[str, str] | None, str]:
    """{name: sha256} of those outbox files the store took in; (None, why) when it cannot tell."""
    if not db_url:
        return None, "no store configured"
    from sqlalchemy import select
    from sqlalchemy.exc import SQLAlchemyError

    from piqc_slurm.errors import StoreError, first_line
    from piqc_slurm.store.db import open_engine
    from piqc_slurm.store.models import SpoolReplay

    try:
        engine = open_engine(db_url, connect_timeout=3, mode="read", check_schema=False)
    except StoreError as exc:
        return None, str(exc)
    try:
        known: dict[str, str] = {}
        with engine.connect() as conn:
            for i in range(0, len(names), 500):
                rows = conn.execute(select(SpoolReplay.name, SpoolReplay.sha256)
                                    .where(SpoolReplay.name.in_(names[i:i + 500])))
                known.update({name: digest for name, digest in rows})
        return known, ""
    except SQLAlchemyError as exc:
        return None, f"store unreadable: {first_line(exc)}"
    finally:
        engine.dispose()


def _cannot_read(name: str, path: object) -> Check:
    return Check(WARN, name, f"{path}: cannot read (run as root)", "run piqc-slurm doctor as root")


def _slurm_conf_lines(path: Path) -> dict[str, str]:
    keys: dict[str, str] = {}
    for line in path.read_text(errors="replace").splitlines():
        line = line.split("#", 1)[0].strip()
        m = re.match(r"^(\w+)\s*=\s*(.*)$", line)
        if m:
            keys[m.group(1).lower()] = m.group(2).strip()
    return keys


def check_hooks(slurm_conf: str) -> list[Check]:
    path = Path(slurm_conf)
    if not path.is_file():
        return [Check(WARN, "hooks", f"no slurm.conf at {path}", "set SLURM_CONF or run on a Slurm node")]
    keys = _slurm_conf_lines(path)
    out = []
    flags = keys.get("prologflags", "")
    if "alloc" not in flags.lower():
        out.append(Check(FAIL, "hooks", f"PrologFlags={flags or '(unset)'} lacks Alloc",
                         "add PrologFlags=Alloc to slurm.conf (the Prolog must run when the allocation starts)"))
    fragments: list[str] = []
    for hook in ("prolog", "epilog"):
        pattern = keys.get(hook)
        if not pattern:
            out.append(Check(FAIL, "hooks", f"{hook.capitalize()}= is not set",
                             f"{hook.capitalize()}=/etc/slurm/{hook}.d/* and install epilog/piqc-hook.sh there"))
            continue
        files = [f for f in glob.glob(pattern) if os.path.isfile(f)]
        ours = []
        for f in files:
            try:
                if "piqc-slurm" in Path(f).read_text(errors="replace"):
                    ours.append(f)
            except PermissionError:
                out.append(_cannot_read("hooks", f))
        if not ours:
            target = f"{pattern.rstrip('*')}50-piqc.sh"
            out.append(Check(FAIL, "hooks", f"{hook.capitalize()}={pattern}: no piqc-slurm fragment among "
                             f"{len(files)} file(s)", f"install -m 755 epilog/piqc-hook.sh {target}"))
            continue
        fragments += ours
        bad = [f for f in ours if not os.access(f, os.X_OK)]
        if bad:
            out.append(Check(FAIL, "hooks", f"{', '.join(bad)} not executable", f"chmod 755 {' '.join(bad)}"))
            continue
        out.append(Check(OK, "hooks", f"{hook.capitalize()}: {', '.join(ours)}"))
    return out + check_hook_bin(fragments)


HOOK_ENV_DEFAULT = "/etc/default/piqc-slurm"
PIQC_BIN_DEFAULT = "/opt/piqc/venv/bin/piqc-slurm"
_ASSIGN = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$")
_VAR = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


def _shell_assignments(text: str, into: dict[str, str]) -> dict[str, str]:
    """NAME=value and `export NAME=value` lines of a sh file, as sourcing it would set them
    (quotes removed, $NAME / ${NAME} of earlier assignments expanded; anything fancier is
    taken literally). Later lines win."""
    for line in text.splitlines():
        m = _ASSIGN.match(line)
        if not m:
            continue
        raw = m.group(2).strip()
        try:
            words = shlex.split(raw, comments=True)
        except ValueError:
            continue
        value = words[0] if words else ""
        if not raw.startswith("'"):
            value = _VAR.sub(lambda v: into.get(v.group(1) or v.group(2), ""), value)
        into[m.group(1)] = value
    return into


def hook_entry_point(fragment: str) -> tuple[str, str, str]:
    """(PIQC_BIN, where that value comes from, the site file the fragment reads) for one installed
    hook fragment (epilog/piqc-hook.sh): its own PIQC_HOOK_ENV= and PIQC_BIN= defaults, then the
    PIQC_BIN the site file sets, as the fragment sources it. PermissionError if the site file
    exists but cannot be read."""
    frag = _shell_assignments(Path(fragment).read_text(errors="replace"), {})
    env_file = frag.get("PIQC_HOOK_ENV") or HOOK_ENV_DEFAULT
    default = frag.get("PIQC_BIN") or PIQC_BIN_DEFAULT
    try:
        text = Path(env_file).read_text(errors="replace")
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return default, f"the fragment's default; no {env_file}", env_file
    if "PIQC_BIN" not in _shell_assignments(text, {}):
        return default, f"the fragment's default; {env_file} does not set it", env_file
    site = _shell_assignments(text, {"PIQC_BIN": default, "PIQC_HOOK_ENV": env_file})
    return site["PIQC_BIN"], f"set in {env_file}", env_file


def check_hook_bin(fragments: Iterable[str]) -> list[Check]:
    """The piqc-slurm entry point each hook fragment calls must be an executable file: the
    fragment skips a missing one silently (exit 0, "nothing done"), so every job goes unmonitored."""
    out: list[Check] = []
    seen: set[tuple[str, str]] = set()
    for frag in fragments:
        try:
            exe, source, env_file = hook_entry_point(frag)
        except PermissionError as exc:
            out.append(_cannot_read("hook bin", exc.filename or frag))
            continue
        if (exe, source) in seen:
            continue
        seen.add((exe, source))
        where = f"PIQC_BIN={exe} ({source})"
        point = f"or set PIQC_BIN in {env_file} to an installed piqc-slurm"
        if not exe.startswith("/"):
            out.append(Check(FAIL, "hook bin", f"{where} is not an absolute path (slurmd runs hooks with no "
                             "PATH): the hooks do nothing", f"an absolute path: {point.removeprefix('or ')}"))
        elif not os.path.isfile(exe):
            venv = str(Path(exe).parent.parent)
            out.append(Check(FAIL, "hook bin", f"{where} does not exist: every job's Prolog and Epilog do "
                             "nothing", f"python3 -m venv {venv} && {venv}/bin/pip install piqc-slurm, {point}"))
        elif not os.access(exe, os.X_OK):
            out.append(Check(FAIL, "hook bin", f"{where} is not executable: every job's Prolog and Epilog "
                             "do nothing", f"chmod 755 {exe}, {point}"))
        else:
            out.append(Check(OK, "hook bin", f"{where} is executable"))
    return out


def check_store(db_url: str) -> Check:
    """Reachable, and at this piqc-slurm's schema revision; read-only (it never migrates)."""
    from piqc_slurm.errors import StoreError, redact_url
    from piqc_slurm.store.db import schema_state, store_status

    try:
        rev, head = store_status(db_url, connect_timeout=5)
    except StoreError as exc:
        fix = ("create it with `piqc-slurm db init` (or check db in the config, --db)" if "db init" in str(exc)
               else "check db in the config (or --db); is the server up?")
        return Check(FAIL, "store", str(exc), fix)
    where, state = redact_url(db_url), schema_state(rev)
    if state == "missing":
        return Check(FAIL, "store", f"{where} reachable, but it has no piqc schema", "piqc-slurm db init")
    if state == "behind":
        return Check(FAIL, "store", f"{where}: schema at {rev}, this piqc-slurm needs {head} (pushes and "
                     "reads fail)", "piqc-slurm db upgrade, on the head node as the store's owner")
    if state == "newer":
        return Check(WARN, "store", f"{where}: schema at {rev}, newer than this piqc-slurm (head {head})",
                     "upgrade piqc-slurm on this host")
    return Check(OK, "store", f"{where} reachable, schema up to date ({rev})")


def check_store_access(db_url: str) -> Check:
    """A SQLite store is readable by whoever may read its file (sqlite3 shows every user's jobs):
    WARN where the file, its -wal/-shm or its directory lets every user in."""
    from piqc_slurm.errors import StoreError
    from piqc_slurm.store.db import sqlite_path

    name = "store perms"
    try:
        path = sqlite_path(db_url) if db_url else None
    except StoreError:
        path = None
    if path is None:
        return Check(OK, name, "skipped: not a SQLite store (PostgreSQL: roles and row-level security decide)")
    target = Path(os.path.abspath(path))
    try:
        st = os.stat(target)
    except OSError:
        return Check(OK, name, f"skipped: no store file at {target}")
    files = [target] + [Path(f"{target}{x}") for x in ("-wal", "-shm")]
    loose = []
    for f in files:
        try:
            if os.stat(f).st_mode & 0o004:
                loose.append(f)
        except OSError:
            continue
    d = target.parent
    dst = os.stat(d)
    open_dir = bool(dst.st_mode & 0o005) and not dst.st_mode & stat.S_ISVTX
    shared_dir = bool(dst.st_mode & stat.S_ISVTX and dst.st_mode & 0o002)
    modes = f"{target} {stat.S_IMODE(st.st_mode):04o}, directory {stat.S_IMODE(dst.st_mode):04o}"
    if not loose and not open_dir:
        return Check(OK, name, f"{modes}: not readable by every user")
    fixes = []
    if loose:
        fixes.append(f"chmod 640 {' '.join(str(f) for f in loose)}")
    if open_dir:
        fixes.append(f"chmod 750 {d}")
    elif shared_dir:
        fixes.append(f"move the store out of {d} (world-writable) into a directory of its own, mode 750")
    what = "readable by every user" if loose else "its directory is open to every user"
    return Check(WARN, name, f"{modes}: {what} (sqlite3 shows them every user's jobs; set store_group "
                 "for the readers)", "; ".join(fixes))


def gpu_type_counts(engine) -> dict[str, int]:
    """{GPU type, lower case: how many jobs have it} over jobs.gpu_type and node_gpus.gpu_type
    (a type only the node inventory shows counts 0). SQLAlchemyError if the tables cannot be read."""
    from sqlalchemy import func, select

    from piqc_slurm.store.models import Job, NodeGpu

    counts: dict[str, int] = {}
    with engine.connect() as conn:
        for t, n in conn.execute(select(Job.gpu_type, func.count()).where(Job.gpu_type.is_not(None))
                                 .group_by(Job.gpu_type)):
            key = str(t).strip().lower()
            counts[key] = counts.get(key, 0) + int(n)
        for t in conn.execute(select(NodeGpu.gpu_type).where(NodeGpu.gpu_type.is_not(None)).distinct()).scalars():
            counts.setdefault(str(t).strip().lower(), 0)
    counts.pop("", None)
    return counts


def unknown_gpu_types(counts: Mapping[str, int], catalog, priced: Iterable[str] = ()) -> dict[str, int]:
    """The part of gpu_type_counts() whose GPU-hours are priced at the fallback (or by partition):
    {type: job count}, most jobs first. Known: a catalog type or any gres name of one (`a100`,
    `nvidia_h100_80gb_hbm3`; Catalog.canonical), or a type in `priced` (the config's [prices]
    keys). Pure; the digest can use it too."""
    known = {str(k).strip().lower() for k in priced} - {"default"}
    unknown = {t: n for t, n in counts.items() if t not in known and catalog.canonical(t) is None}
    return dict(sorted(unknown.items(), key=lambda kv: (-kv[1], kv[0])))


def check_gpu_types(db_url: str, prices: Mapping[str, float] | None = None) -> Check:
    """GPU types in the store (jobs, node inventory) that the catalog does not know: their
    GPU-hours are priced at the fallback (or by partition), not at a price for the card."""
    from sqlalchemy.exc import SQLAlchemyError

    from piqc_slurm.errors import StoreError, first_line
    from piqc_slurm.store.db import open_engine
    from piqc_slurm.usage.catalog import load_catalog

    name = "gpu types"
    prices = {str(k).strip().lower(): v for k, v in (prices or {}).items()}
    try:
        catalog = load_catalog()
    except ValueError as exc:
        return Check(FAIL, name, str(exc), "reinstall piqc-slurm (its GPU catalog is unreadable)")
    try:
        engine = open_engine(db_url, connect_timeout=5, mode="read", check_schema=False)
    except StoreError as exc:
        return Check(OK, name, f"skipped: the store is not reachable ({exc})")
    try:
        counts = gpu_type_counts(engine)
    except SQLAlchemyError as exc:
        return Check(OK, name, f"skipped: the store cannot be read ({first_line(exc)})")
    finally:
        engine.dispose()
    if not counts:
        return Check(OK, name, "skipped: no GPU types in the store yet (nothing ingested)")
    unknown = unknown_gpu_types(counts, catalog, prices)
    if not unknown:
        return Check(OK, name, f"{len(counts)} GPU type(s) in the store, all in the catalog or [prices]: "
                     f"{', '.join(sorted(counts))}")
    fallback = float(prices.get("default", catalog.fallback_price))
    listed = ", ".join(f"{t} ({n} job{'' if n == 1 else 's'}{'' if n else ', nodes only'})"
                       for t, n in unknown.items())
    return Check(WARN, name, f"not in the GPU catalog: {listed}; priced at the fallback ${fallback:.2f} per "
                 "GPU-hour (or by [partition_prices]), not at a price for the card",
                 f"add each to [prices] in the config (`{next(iter(unknown))} = <USD per GPU-hour>`), "
                 "or to the GPU catalog (docs/catalog.md)")


def check_slurm_conf(slurm_conf: str, explicit: bool) -> Check:
    """The slurm.conf every Slurm check reads, at once: a SLURM_CONF naming no file is a FAIL
    (sacct would wait for a controller it cannot name); no /etc/slurm/slurm.conf without
    SLURM_CONF may be a configless node, a WARN."""
    p = Path(slurm_conf)
    shown = f"SLURM_CONF={p}" if explicit else str(p)
    try:
        with open(p, "rb"):
            pass
    except FileNotFoundError:
        if explicit:
            return Check(FAIL, "slurm.conf", f"{shown}: no such file",
                         "point SLURM_CONF at the cluster's slurm.conf, or unset it")
        return Check(WARN, "slurm.conf", f"no slurm.conf at {p} (a configless node?)",
                     "set SLURM_CONF, or run on a Slurm node")
    except IsADirectoryError:
        return Check(FAIL if explicit else WARN, "slurm.conf", f"{shown}: a directory, not a file",
                     "point SLURM_CONF at the cluster's slurm.conf")
    except PermissionError:
        return _cannot_read("slurm.conf", shown)
    return Check(OK, "slurm.conf", f"{shown}")


def _slurmdbd_of(slurm_conf: str | None) -> str:
    """'slurmdbd at HOST:PORT (AccountingStorageHost in PATH)', or '' when slurm.conf does not say."""
    if not slurm_conf:
        return ""
    try:
        keys = _slurm_conf_lines(Path(slurm_conf))
    except OSError:
        return ""
    host = keys.get("accountingstoragehost")
    if not host:
        return ""
    port = keys.get("accountingstorageport", "6819")
    return f"slurmdbd at {host}:{port} (AccountingStorageHost in {slurm_conf})"


def check_sacct(timeout: float = 5, slurm_conf: str | None = None) -> Check:
    """sacct answers within `timeout` seconds (it asks slurmdbd directly, not slurmctld)."""
    try:
        r = subprocess.run(["sacct", "-n", "-X", "-P", "-S", "now-1hours", "-o", "JobID"], capture_output=True,
                           text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        return Check(FAIL, "sacct", "sacct not found on PATH", "install slurm-client, or run on a Slurm login node")
    except subprocess.TimeoutExpired:
        dbd = _slurmdbd_of(slurm_conf)
        return Check(FAIL, "sacct", f"sacct gave no answer within {timeout:g}s"
                     + (f"; it asks {dbd}" if dbd else "; slurm.conf names no AccountingStorageHost"),
                     "is slurmdbd running and reachable from here (its port open, munge keys alike)? "
                     "`sacctmgr show cluster` asks the same daemon")
    except PermissionError as exc:
        return _cannot_read("sacct", exc.filename or "sacct")
    if r.returncode != 0:
        return Check(FAIL, "sacct", (r.stderr.strip().splitlines() or ["failed"])[-1],
                     "is slurmdbd reachable (AccountingStorageType=accounting_storage/slurmdbd)?")
    n = len(r.stdout.split())
    return Check(OK, "sacct", f"answers ({n} job(s) in the last hour)")


def _guarded(name: str, check, *args) -> list[Check]:
    """Run one check; a permission error (an ordinary user meeting a root-only file) or another
    OS error becomes a WARN naming the file, never a traceback."""
    try:
        got = check(*args)
    except PermissionError as exc:
        return [_cannot_read(name, exc.filename or "a file it needs")]
    except OSError as exc:
        return [Check(WARN, name, f"could not check: {exc}")]
    return got if isinstance(got, list) else [got]


def check_spank(slurm_conf: str, spool_dir: str | None = None) -> Check:
    """piqc.so in plugstack.conf; with `spool_dir`, its spool= must name it (the job info the
    Epilog's report needs for array tasks and %x, hooks/jobinfo.py)."""
    plug = Path(slurm_conf).with_name("plugstack.conf")
    try:
        keys = _slurm_conf_lines(Path(slurm_conf))
        plug = Path(keys.get("plugstackconfig", str(plug)))
    except OSError:
        pass
    text = plug.read_text(errors="replace") if plug.is_file() else ""
    for line in text.splitlines():
        words = shlex.split(line.split("#", 1)[0]) if line.strip() else []
        if len(words) >= 2 and words[1].endswith("piqc.so"):
            if words[0] == "required":
                return Check(WARN, "spank", f"{plug}: piqc.so is 'required'",
                             "use 'optional': a required plugin left unbuilt after a Slurm upgrade stops every command")
            if not os.path.isfile(words[1]):
                return Check(FAIL, "spank", f"{words[1]} named in {plug} does not exist", "make -C spank")
            spool = next((w[len("spool="):] for w in words[2:] if w.startswith("spool=")), None)
            if spool_dir and spool is None:
                return Check(WARN, "spank", f"{plug}: piqc.so has no spool=: array tasks and %x output "
                             "files get no report", f"add spool={spool_dir} to its line")
            if spool and "%n" in spool:  # the plugin expands it as the config does
                from piqc_slurm.config import expand_node
                from piqc_slurm.errors import ConfigError

                try:
                    spool = expand_node(spool, os.environ, plug)
                except ConfigError as exc:
                    return Check(WARN, "spank", str(exc), "set SLURMD_NODENAME to this node's name")
            if spool_dir and os.path.normpath(spool) != os.path.normpath(spool_dir):
                return Check(WARN, "spank", f"{plug}: piqc.so spool={spool} but spool_dir is {spool_dir}: "
                             "the Epilog finds no job info", f"set spool={spool_dir}")
            return Check(OK, "spank", f"--gpu-monitor plugin loaded from {words[1]}"
                         + (f", job info in {spool}/jobinfo" if spool_dir else ""))
    return Check(WARN, "spank", f"piqc.so not in {plug} (users cannot tune or opt out)",
                 "optional: see spank/README.md")


def run_all(cfg, db_url: str) -> list[Check]:
    explicit = bool(os.environ.get("SLURM_CONF"))
    slurm_conf = os.environ.get("SLURM_CONF") or "/etc/slurm/slurm.conf"
    checks = _guarded("nvml", check_nvml)
    checks += _guarded("spool", check_spool, cfg["spool_dir"], cfg["delivery"], cfg["shared_spool_dir"], db_url)
    conf = check_slurm_conf(slurm_conf, explicit)
    checks.append(conf)
    if conf.status == OK:
        checks += _guarded("hooks", check_hooks, slurm_conf)
        checks += _guarded("spank", check_spank, slurm_conf, cfg["spool_dir"])
    else:
        checks += [Check(WARN, name, f"skipped: needs the slurm.conf above ({conf.what})")
                   for name in ("hooks", "spank")]
    checks.append(check_store(db_url))
    checks.append(check_store_access(db_url))
    checks.append(check_gpu_types(db_url, cfg["prices"]))
    if conf.status == FAIL:   # sacct would only wait for a controller it cannot name
        checks.append(Check(WARN, "sacct", f"skipped: needs the slurm.conf above ({conf.what})"))
    else:
        checks += _guarded("sacct", check_sacct, 5, slurm_conf)
    return checks
