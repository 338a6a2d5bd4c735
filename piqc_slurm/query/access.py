"""Who may see which jobs: sacct with PrivateData=jobs.

Root, a user named in [access] admin_users, or a member of a group named in
[access] admin_groups (primary or supplementary, looked up on this host) is
an admin and sees every job. Everyone else sees only their own jobs,
whatever -u or -a says: `-u bob` asked by alice lists nothing, as slurmdbd
answers a non-admin under PrivateData=jobs."""

from __future__ import annotations

import grp
import os
import pwd
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Caller:
    uid: int
    name: str
    groups: frozenset[str] = frozenset()

    @classmethod
    def current(cls) -> Caller:
        uid = os.getuid()
        try:
            pw = pwd.getpwuid(uid)
        except KeyError:
            return cls(uid, str(uid))
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
        return cls(uid, pw.pw_name, frozenset(names))


def is_admin(caller: Caller, admin_users: Iterable[str], admin_groups: Iterable[str]) -> bool:
    return caller.uid == 0 or caller.name in set(admin_users) or bool(caller.groups & set(admin_groups))


def resolve_users(values: Iterable[str]) -> tuple[list[str], list[int]]:
    """-u items (names or uids) -> (names, uids without a local name).

    sacct turns names into uids through the local passwd; the store keeps
    names, so a uid is turned into its local name where one exists, else
    matched against the stored UID. A name unknown here is still matched by
    name (the query host need not know every cluster user)."""
    names: list[str] = []
    uids: list[int] = []
    for v in values:
        if v.isascii() and v.isdigit():
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
