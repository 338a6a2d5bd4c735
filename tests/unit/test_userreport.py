"""The user-report writer: privileges dropped before open, no symlinks, a deadline.
Needs root (it drops to the job's uid), as the Epilog runs."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from piqc_slurm.hooks import userreport
from piqc_slurm.hooks.userreport import append_as_user

pytestmark = [pytest.mark.unit,
              pytest.mark.skipif(os.geteuid() != 0, reason="the writer drops root to the job's uid")]
NOBODY = 65534


@pytest.fixture
def user_dir():
    """A directory the unprivileged user can reach (pytest's own tmp is root-only)."""
    d = Path(tempfile.mkdtemp(prefix="piqc-report-", dir="/tmp"))
    os.chmod(d, 0o755)
    os.chown(d, NOBODY, NOBODY)
    yield d
    shutil.rmtree(d)


def test_appends_as_the_user(user_dir):
    out = user_dir / "job.out"
    out.write_text("job output\n")
    os.chown(out, NOBODY, NOBODY)
    os.chmod(out, 0o600)  # readable by its owner only: root could, the dropped child must be the owner
    assert append_as_user(str(out), "report\n", NOBODY, NOBODY, "nobody", timeout=5) == "ok"
    assert out.read_text() == "job output\nreport\n"
    assert os.stat(out).st_uid == NOBODY


def test_never_follows_a_symlink_and_never_writes_root_files(user_dir, tmp_path):
    target = tmp_path / "root-owned"
    target.write_text("root's\n")
    os.chmod(target, 0o666)  # even a world-writable target is not reached through the link
    link = user_dir / "job.out"
    os.symlink(target, link)
    assert append_as_user(str(link), "x\n", NOBODY, NOBODY, "nobody", timeout=5) == "a symlink (not followed)"
    assert target.read_text() == "root's\n"
    os.chmod(target, 0o644)
    assert append_as_user(str(target), "x\n", NOBODY, NOBODY, "nobody", timeout=5) == "permission denied"
    assert append_as_user(str(target), "x\n", 0, 0, "root", timeout=5).startswith("job runs as root")
    assert target.read_text() == "root's\n"


def test_only_regular_files(user_dir):
    fifo = user_dir / "job.out"
    os.mkfifo(fifo)
    os.chown(fifo, NOBODY, NOBODY)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader, so opening for writing succeeds
    try:
        assert append_as_user(str(fifo), "x\n", NOBODY, NOBODY, "nobody", timeout=5) == "not a regular file"
        try:
            assert os.read(reader, 10) == b""  # nothing was written into it
        except BlockingIOError:
            pass
    finally:
        os.close(reader)


def test_a_hung_file_system_does_not_hold_the_epilog(user_dir, monkeypatch):
    monkeypatch.setattr(userreport, "_drop_and_append", lambda *a: time.sleep(30) or 0)
    t0 = time.monotonic()
    result = append_as_user(str(user_dir / "job.out"), "x\n", NOBODY, NOBODY, "nobody", timeout=0.5)
    assert result.startswith("timed out after 0.5s")
    assert time.monotonic() - t0 < 2
