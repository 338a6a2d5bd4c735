"""Small file-system helpers shared by the hooks, the sampler and the store.
Standard library only and cheap to import: the Prolog path uses them."""

from __future__ import annotations

import os
import stat
from pathlib import Path


def unsafe_dir(path: str | Path) -> str | None:
    """Why root must not write in the existing directory `path` (a symlink or not a directory,
    owned by someone else, writable by group or others), or None when it may. lstat: a missing
    path raises FileNotFoundError."""
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        return f"{path} is not a plain directory"
    if st.st_uid != os.geteuid():
        return f"{path} is owned by uid {st.st_uid}, not by us"
    if st.st_mode & 0o022:
        return f"{path} is writable by group or others (mode {st.st_mode & 0o777:o})"
    return None


def write_all(fd: int, data: bytes) -> None:
    """os.write until every byte is out (a write may be short)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def write_atomic(path: str | Path, data: bytes, mode: int = 0o600) -> None:
    """Replace `path` with `data` so that no reader ever sees a partial file:
    write a temp file (never through a symlink), fsync, rename, fsync the dir."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    try:
        write_all(fd, data)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    try:
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)
