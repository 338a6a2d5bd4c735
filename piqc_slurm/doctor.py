"""`piqc-slurm doctor`: check what the tool depends on, and say what to fix.

Each check returns (status, what, fix): status is OK, WARN or FAIL. Checks
take their system roots as arguments (slurm.conf path, environment) so they
can be pointed at a test cluster.
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


def check_spool(spool_dir: str, delivery: str, shared_dir: str) -> list[Check]:
    out = []
    p = Path(spool_dir)
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        out.append(Check(WARN, "spool", f"{p} does not exist yet", "the first Prolog creates it (root, 0700)"))
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
            pending = len(list((p / "outbox").glob("*.summary.json"))) if (p / "outbox").is_dir() else 0
            out.append(Check(OK, "spool", f"{p} root-only; {pending} summaries waiting in outbox"))
    if delivery == "shared-spool":
        if not shared_dir:
            out.append(Check(FAIL, "shared-spool", "delivery = shared-spool but shared_spool_dir is empty",
                             "set shared_spool_dir in the config"))
        elif not os.path.isdir(shared_dir) or not os.access(shared_dir, os.W_OK | os.X_OK):
            out.append(Check(FAIL, "shared-spool", f"{shared_dir} missing or not writable",
                             f"mkdir -p {shared_dir}, on storage every node mounts"))
        else:
            out.append(Check(OK, "shared-spool", f"{shared_dir} writable"))
    return out


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
    for hook in ("prolog", "epilog"):
        pattern = keys.get(hook)
        if not pattern:
            out.append(Check(FAIL, "hooks", f"{hook.capitalize()}= is not set",
                             f"{hook.capitalize()}=/etc/slurm/{hook}.d/* and install epilog/piqc-hook.sh there"))
            continue
        files = [f for f in glob.glob(pattern) if os.path.isfile(f)]
        ours = [f for f in files if "piqc-slurm" in Path(f).read_text(errors="replace")]
        if not ours:
            target = f"{pattern.rstrip('*')}50-piqc.sh"
            out.append(Check(FAIL, "hooks", f"{hook.capitalize()}={pattern}: no piqc-slurm fragment among "
                             f"{len(files)} file(s)", f"install -m 755 epilog/piqc-hook.sh {target}"))
            continue
        bad = [f for f in ours if not os.access(f, os.X_OK)]
        if bad:
            out.append(Check(FAIL, "hooks", f"{', '.join(bad)} not executable", f"chmod 755 {' '.join(bad)}"))
            continue
        out.append(Check(OK, "hooks", f"{hook.capitalize()}: {', '.join(ours)}"))
    return out


def check_store(db_url: str) -> Check:
    from piqc_slurm.errors import StoreError, redact_url
    from piqc_slurm.store.db import open_engine

    try:
        engine = open_engine(db_url, connect_timeout=5)
    except StoreError as exc:
        return Check(FAIL, "store", str(exc), "check db in the config (or --db); is the server up?")
    engine.dispose()
    return Check(OK, "store", f"{redact_url(db_url)} reachable, schema up to date")


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
        engine = open_engine(db_url, connect_timeout=5, migrate_schema=False)
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


def check_sacct(timeout: float = 15) -> Check:
    try:
        r = subprocess.run(["sacct", "-n", "-X", "-P", "-S", "now-1hours", "-o", "JobID"], capture_output=True,
                           text=True, timeout=timeout)
    except FileNotFoundError:
        return Check(FAIL, "sacct", "sacct not found on PATH", "install slurm-client, or run on a Slurm login node")
    except subprocess.TimeoutExpired:
        return Check(FAIL, "sacct", f"sacct did not answer within {timeout:g}s", "is slurmdbd up?")
    if r.returncode != 0:
        return Check(FAIL, "sacct", (r.stderr.strip().splitlines() or ["failed"])[-1],
                     "is slurmdbd reachable (AccountingStorageType=accounting_storage/slurmdbd)?")
    n = len(r.stdout.split())
    return Check(OK, "sacct", f"answers ({n} job(s) in the last hour)")


def check_spank(slurm_conf: str) -> Check:
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
            return Check(OK, "spank", f"--gpu-monitor plugin loaded from {words[1]}")
    return Check(WARN, "spank", f"piqc.so not in {plug} (users cannot tune or opt out)",
                 "optional: see spank/README.md")


def run_all(cfg, db_url: str) -> list[Check]:
    slurm_conf = os.environ.get("SLURM_CONF", "/etc/slurm/slurm.conf")
    checks = [check_nvml()]
    checks += check_spool(cfg["spool_dir"], cfg["delivery"], cfg["shared_spool_dir"])
    checks += check_hooks(slurm_conf)
    checks.append(check_spank(slurm_conf))
    checks.append(check_store(db_url))
    checks.append(check_gpu_types(db_url, cfg["prices"]))
    checks.append(check_sacct())
    return checks
