"""Who may see which jobs: as Slurm's PrivateData says.

Root, slurm.conf's SlurmUser, a user named in [access] admin_users, or a
member of a group named in [access] admin_groups (primary or supplementary,
looked up on this host) sees every job. Everyone else sees what slurm.conf's
PrivateData lets them: with `jobs` in it only their own jobs, whatever -u or
-a says (`-u bob` asked by alice lists nothing, as slurmdbd answers a
non-admin under PrivateData=jobs); without it every job, as sacct shows
them. slurm.conf is $SLURM_CONF, else /etc/slurm/slurm.conf, parsed here
(its `PrivateData=` and `SlurmUser=` lines, any case; `Include` files are not
followed): `scontrol show config` would print the same at the cost of a
controller RPC. A slurm.conf that cannot be read hides other users' jobs.

On a slurmdbd site sacct itself obeys slurmdbd.conf's PrivateData, which
users cannot read (it holds the database password): a site keeps the two the
same. A Caller made by hand (tests, tools) hides everything unless told."""

from __future__ import annotations

import grp
import os
import pwd
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

SLURM_CONF = "/etc/slurm/slurm.conf"
EVERYTHING = frozenset({"accounts", "events", "jobs", "nodes", "partitions", "reservations", "usage", "users"})
_PAIR = re.compile(r"(?:^|\s)(PrivateData|SlurmUser)\s*=\s*(\"[^\"]*\"|\S*)", re.I)


@dataclass(frozen=True)
class SlurmPrivacy:
    """What slurm.conf hides from regular users (PrivateData's words, lower case) and its SlurmUser."""

    private_data: frozenset[str] = EVERYTHING
    slurm_user: str = "root"
    source: str = ""  # the file read; "" where none could be


def parse_slurm_conf(text: str, source: str = "") -> SlurmPrivacy:
    """The PrivateData and SlurmUser of slurm.conf text (the last of each wins, as slurmctld's
    parser takes the latest value; no PrivateData: nothing is private; no SlurmUser: root)."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0]
        for m in _PAIR.finditer(line):
            found[m.group(1).lower()] = m.group(2).strip('"')
    words = frozenset(w.strip().lower() for w in found.get("privatedata", "").split(",") if w.strip())
    return SlurmPrivacy(words, found.get("slurmuser") or "root", source)


def slurm_privacy(env: Mapping[str, str] | None = None) -> SlurmPrivacy:
    """slurm.conf's PrivateData and SlurmUser; everything private where it cannot be read."""
    path = (os.environ if env is None else env).get("SLURM_CONF") or SLURM_CONF
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            text = fh.read()
    except OSError:
        return SlurmPrivacy()
    return parse_slurm_conf(text, path)


@dataclass(frozen=True)
class Caller:
    uid: int
    name: str
    groups: frozenset[str] = frozenset()
    privacy: SlurmPrivacy = SlurmPrivacy()

    @classmethod
    def current(cls, env: Mapping[str, str] | None = None) -> Caller:
        """The user running piqc-slurm, with this host's slurm.conf's PrivateData."""
        privacy = slurm_privacy(env)
        uid = os.getuid()
        try:
            pw = pwd.getpwuid(uid)
        except KeyError:
            return cls(uid, str(uid), privacy=privacy)
        try:
            gids = os.getgrouplist(pw.pw_name, pw.pw_gid)
        except OSError:
            gids = [pw.pw_gid]
        names = set()
        for gid in gids:
            try:
                names.add(grp.getgrgid(gid).gr_name)
            except KeyError:
                continue
        return cls(uid, pw.pw_name, frozenset(names), privacy)


def is_admin(caller: Caller, admin_users: Iterable[str], admin_groups: Iterable[str],
             hidden_by: Iterable[str] = ("jobs",)) -> bool:
    """Whether the caller sees every user's jobs: root, SlurmUser, an [access] admin, or anyone
    when none of `hidden_by` (PrivateData words: `jobs`; costs, as sreport, also `usage`) is in
    slurm.conf's PrivateData."""
    if caller.uid == 0 or caller.name in set(admin_users) or caller.groups & set(admin_groups):
        return True
    privacy = caller.privacy
    return caller.name == privacy.slurm_user or not privacy.private_data & set(hidden_by)


def known_locally(name: str) -> bool:
    """Whether this host's passwd knows the user name."""
    try:
        pwd.getpwnam(name)
    except (KeyError, ValueError):  # ValueError: an embedded NUL
        return False
    return True


def resolve_users(values: Iterable[str]) -> tuple[list[str], list[int]]:
    """-u items (names or uids) -> (names, uids without a local name).

    sacct turns names into uids through the local passwd; the store keeps
    names, so a uid is turned into its local name where one exists, else
    matched against the stored UID. A name unknown here is still matched by
    name (the query host need not know every cluster user)."""
    names: list[str] = []
    uids: list[int] = []
    for v in values:
        if v.isascii() and v.isdigit() and len(v) <= 10 and int(v) <= 0xFFFFFFFF:  # a uid is a uint32
            try:
                name = pwd.getpwuid(int(v)).pw_name
            except (KeyError, OverflowError):
                if int(v) not in uids:
                    uids.append(int(v))
                continue
        else:
            name = v
        if name not in names:
            names.append(name)
    return names, uids
