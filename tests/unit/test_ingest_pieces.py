"""Big sacct inputs are cut into pieces parsed by worker processes: the store
and the error line numbers must come out exactly as from one piece."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from piqc_slurm import ingest as ingest_mod
from piqc_slurm.store import open_engine
from piqc_slurm.store.models import Base

pytestmark = pytest.mark.unit
SACCT = Path(__file__).resolve().parents[1] / "fixtures" / "sacct" / "22.05.8"


def sacct_text() -> str:
    """Every recorded ingest-form case with the same header in one output, plus a malformed line near
    the end (cpu_busy, recorded with TotalCPU added, has a header of its own)."""
    header, body = "", []
    for f in sorted(SACCT.glob("*.ingest.txt")):
        lines = [ln for ln in f.read_text().splitlines() if ln and not ln.startswith("#")]
        if header and lines[0] != header:
            continue
        header = lines[0]
        body += lines[1:]
    body.insert(len(body) - 2, "99999\x1fgarbage")
    return header + "\n" + "\n".join(body) + "\n"


def run(tmp_path: Path, name: str, text: str):
    src = tmp_path / f"{name}.txt"
    src.write_text(text)
    engine = open_engine(f"sqlite:///{tmp_path}/{name}.db")
    res = ingest_mod.ingest(engine, cluster="piqc", sacct_file=str(src))
    with engine.connect() as c:
        table = Base.metadata.tables["jobs"]
        rows = sorted(tuple(str(v) for v in r[1:]) for r in c.execute(select(table)).all())
    engine.dispose()
    return res, rows


def test_pieces_give_the_same_store_and_line_numbers(tmp_path, monkeypatch):
    text = sacct_text()
    whole, whole_rows = run(tmp_path, "whole", text)
    monkeypatch.setattr(ingest_mod, "CHUNK_LINES", 4)  # many pieces, parsed in a process pool
    assert len(list(ingest_mod.chunks(text))) > 3
    pieces, piece_rows = run(tmp_path, "pieces", text)
    assert piece_rows == whole_rows and len(whole_rows) == whole.jobs
    def where(errors):  # the messages past the file name (the two inputs have different names)
        return [e.split(".txt:", 1)[1] for e in errors]

    assert where(pieces.errors) == where(whole.errors) and len(whole.errors) == 1
    assert f":{text.splitlines().index('99999' + chr(31) + 'garbage') + 1}: " in whole.errors[0]


def test_a_file_without_cluster_and_no_cluster_name_is_one_clear_error(tmp_path):
    from piqc_slurm.errors import SacctError

    engine = open_engine(f"sqlite:///{tmp_path}/x.db")
    src = SACCT / "completed.parsable2.txt"          # recorded without a Cluster column
    with pytest.raises(SacctError, match=r"completed\.parsable2\.txt: no Cluster column, and no cluster name is "
                                         r"known: set `cluster` in the config"):
        ingest_mod.ingest(engine, cluster="", sacct_file=str(src))
    assert ingest_mod.ingest(engine, cluster="piqc", sacct_file=str(src)).jobs == 1
    engine.dispose()
