"""Lines as sacct 22.05.8 prints them (src/common/print_fields.c), as bytes.

Widths count bytes, as C's printf and strlen do: a multi-byte job name is cut
where sacct cuts it. Table mode: each cell is followed by one blank (the last
too); strings longer than the width end in `+`; numbers and durations are
never cut; times are cut without a mark. -p: every cell followed by the
delimiter; -P: no delimiter after the last cell."""

from __future__ import annotations

from collections.abc import Sequence

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

    # --- cells -------------------------------------------------------------------
    def _cell(self, col: Column, value: object) -> bytes:
        kind, width = col.field.kind, col.width
        n = abs(width)
        if kind == DATE:
            text = self.times.text(value or 0, n + 1)  # type: ignore[arg-type]
            return text if self.mode != TABLE else _pad(text, width)
        if kind == STR:
            if self.mode != TABLE:
                return b"" if value is None else _b(str(value))
            if value is None:
                return _pad(b" ", width)
            raw = _b(str(value))
            if len(raw) > n:
                raw = raw[:n - 1] + b"+" if n > 0 else b""
            return _pad(raw, width)
        if isinstance(value, str) and kind in (UINT, SECS):
            # verbatim text of a number or a duration (jobs.extra, jobs.steps): never cut; "" = unset
            if value == "":
                value = None
            else:
                text = _b(value)
                return text if self.mode != TABLE else (text.rjust(n) if width >= 0 else text.ljust(n))
        if kind == UINT:
            if value is None:
                return b"" if self.mode != TABLE else b" ".rjust(n) if width >= 0 else b" ".ljust(n)
            text = str(int(value)).encode()  # type: ignore[call-overload]
            return text if self.mode != TABLE else (text.rjust(n) if width >= 0 else text.ljust(n))
        if kind == SECS:
            if value is None:
                return b"" if self.mode != TABLE else b" ".rjust(n) if width >= 0 else b" ".ljust(n)
            text = secs2time_str(int(value)).encode()  # type: ignore[call-overload]
            return text if self.mode != TABLE else (text.rjust(n) if width >= 0 else text.ljust(n))
        raise ValueError(f"unknown field kind {kind!r}")

    def _join(self, cells: list[bytes]) -> bytes:
        if self.mode == TABLE:
            return b"".join(c + b" " for c in cells) + b"\n"
        if self.mode == PARSABLE:
            return b"".join(c + self.delim for c in cells) + b"\n"
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
        return self._join([self._cell(c, v) for c, v in zip(self.columns, values, strict=True)])
