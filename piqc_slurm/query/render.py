"""Lines as sacct 22.05.8 prints them (src/common/print_fields.c), as bytes.

Widths count bytes, as C's printf and strlen do: a multi-byte job name is cut
where sacct cuts it. Table mode: each cell is followed by one blank (the last
too); strings longer than the width end in `+`; numbers and durations are
never cut; times are cut without a mark. -p: every cell followed by the
delimiter; -P: no delimiter after the last cell."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from piqc_slurm.query.fields import DATE, SECS, STR, UINT, Column
from piqc_slurm.query.timefmt import INFINITE, TimeFormatter

TABLE, PARSABLE, PARSABLE2 = "table", "parsable", "parsable2"


def _b(s: str) -> bytes:
    return s.encode("utf-8", "surrogateescape")


def _pad(text: bytes, width: int) -> bytes:
    """printf("%*.*s", width, abs(width), text): cut to |width|, right-justify if width >= 0."""
    n = abs(width)
    text = text[:n]
    return text.rjust(n) if width >= 0 else text.ljust(n)


def secs2time_str(secs: int) -> str:
    """src/common/parse_time.c secs2time_str: [D-]HH:MM:SS, INVALID if negative."""
    if secs == INFINITE:
        return "UNLIMITED"
    if secs < 0:
        return "INVALID"
    d, rest = divmod(secs, 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    return f"{d}-{h:02d}:{m:02d}:{s:02d}" if d else f"{h:02d}:{m:02d}:{s:02d}"


class Renderer:
    def __init__(self, columns: Sequence[Column], mode: str, delimiter: str | None, times: TimeFormatter):
        self.columns = list(columns)
        self.mode = mode
        self.delim = _b(delimiter if delimiter is not None else "|")
        self.times = times
        # one formatter per column, its kind, width and mode decided once (a listing of thousands of
        # lines calls them for every cell: bench/bench_cluster.py's window set)
        self._cells = [self._formatter(c) for c in self.columns]

    # --- cells -------------------------------------------------------------------
    def _formatter(self, col: Column) -> Callable[[object], bytes]:
        kind, width = col.field.kind, col.width
        n = abs(width)
        table = self.mode == TABLE
        pad: Callable[[bytes], bytes] = (lambda t: t.rjust(n)) if width >= 0 else (lambda t: t.ljust(n))
        if kind == DATE:
            text = self.times.text
            if not table:
                return lambda v: text(v or 0, n + 1)  # type: ignore[arg-type]
            return lambda v: _pad(text(v or 0, n + 1), width)  # type: ignore[arg-type]
        if kind == STR:
            if not table:
                return lambda v: b"" if v is None else _b(str(v))
            blank = _pad(b" ", width)

            def cell_str(v: object) -> bytes:
                if v is None:
                    return blank
                raw = _b(str(v))
                if len(raw) > n:
                    raw = raw[:n - 1] + b"+" if n > 0 else b""
                return pad(raw)
            return cell_str
        if kind not in (UINT, SECS):
            raise ValueError(f"unknown field kind {kind!r}")
        unset = b" ".rjust(n) if width >= 0 else b" ".ljust(n)
        show = (lambda v: str(int(v)).encode()) if kind == UINT else (lambda v: secs2time_str(int(v)).encode())

        def cell_num(v: object) -> bytes:
            if isinstance(v, str):
                # verbatim text of a number or a duration (jobs.extra, jobs.steps): never cut; "" = unset
                if v != "":
                    return pad(_b(v)) if table else _b(v)
                v = None
            if v is None:
                return unset if table else b""
            return pad(show(v)) if table else show(v)
        return cell_num

    def _join(self, cells: list[bytes]) -> bytes:
        if self.mode == TABLE:
            return b" ".join(cells) + b" \n" if cells else b"\n"
        if self.mode == PARSABLE:
            return self.delim.join(cells) + self.delim + b"\n" if cells else b"\n"
        return self.delim.join(cells) + b"\n"

    # --- lines -------------------------------------------------------------------
    def header(self) -> bytes:
        names = [_b(c.field.name) for c in self.columns]
        if self.mode != TABLE:
            return self._join(names)
        line = self._join([_pad(nm, c.width) for nm, c in zip(names, self.columns, strict=True)])
        dashes = b"".join(b"-" * abs(c.width) + b" " for c in self.columns) + b"\n"
        return line + dashes

    def line(self, values: Sequence[object]) -> bytes:
        if len(values) != len(self._cells):
            raise ValueError(f"{len(values)} values for {len(self._cells)} columns")
        return self._join([f(v) for f, v in zip(self._cells, values)])  # noqa: B905 - lengths checked above
