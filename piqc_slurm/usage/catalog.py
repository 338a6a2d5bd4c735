"""The GPU catalog (piqc_slurm/data/gpus.json, format piqc-catalog/1; docs/catalog.md).

A Catalog maps NVML device names and Slurm gres type names to piqc's canonical
GPU types, and gives each type its datasheet figures and a dated default
price. Nothing is loaded at import and nothing is cached: load_catalog() reads
the file each time it is called, and with_overrides() returns a new Catalog.
Standard library only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, NamedTuple

FORMAT = "piqc-catalog/1"

_TYPE_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")
# Slurm's AutoDetect=nvml names a gres type after the NVML name, lower-cased, spaces as "_".
_GRES_SPACE = re.compile(r"_+")
# A MIG profile ("1g.10gb") in a gres name: a slice, which the catalog does not price.
_MIG_PROFILE = re.compile(r"\d+g\.\d+gb", re.IGNORECASE)


class GpuSpec(NamedTuple):
    """One GPU type. Numbers are None only for a type a site added without them."""

    type: str                    # canonical piqc type, e.g. "h100"
    name: str                    # marketing name
    mem_gib: float | None        # memory as marketed (an "80GB" card)
    bf16_tflops: float | None    # dense BF16 tensor TFLOP/s (FP16 where there is no BF16)
    mem_bw_gbs: float | None     # memory bandwidth, GB/s
    power_w: float | None        # board power limit (TDP), W
    gpm: bool                    # NVML GPM metrics supported (Hopper and newer)
    price: float | None          # default USD per GPU-hour; None: not priced by the catalog
    price_source: str
    spec_source: str
    nvml: tuple[str, ...]        # case-insensitive regexes, re.search on the NVML name
    gres: tuple[str, ...]        # lower-case gres type names meaning this type
    tflops_note: str | None = None


def _show(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 60 else s[:57] + "..."


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


class _Bad(Exception):
    """A problem in catalog data: `where` (a dotted path) and what was wrong."""

    def __init__(self, where: str, problem: str):
        super().__init__(f"{where}: {problem}")
        self.where, self.problem = where, problem


def _positive(v: Any, where: str) -> float:
    if not _is_number(v) or not v > 0 or v != v or v == float("inf"):
        raise _Bad(where, f"expected a positive number, got {_show(v)}")
    return v


def _text(v: Any, where: str) -> str:
    if not isinstance(v, str) or not v.strip():
        raise _Bad(where, f"expected a non-empty string, got {_show(v)}")
    return v


def _strings(v: Any, where: str) -> tuple[str, ...]:
    if not isinstance(v, list) or not v:
        raise _Bad(where, f"expected a non-empty list of strings, got {_show(v)}")
    for i, s in enumerate(v):
        _text(s, f"{where}[{i}]")
    return tuple(v)


_REQUIRED = ("name", "nvml", "gres", "mem_gib", "bf16_tflops", "mem_bw_gbs", "power_w", "gpm", "price",
             "price_source", "spec_source")
_OPTIONAL = ("tflops_note",)
_TOP_REQUIRED = ("format", "prices_seen", "fallback_price", "types")


def _spec_from_file(t: str, raw: Any) -> GpuSpec:
    where = f"types.{t}"
    if not _TYPE_NAME.match(t):
        raise _Bad(where, "expected a lower-case type name (letters, digits, '.', '_', '-')")
    if not isinstance(raw, dict):
        raise _Bad(where, f"expected an object, got {_show(raw)}")
    for key in raw:
        if key not in _REQUIRED and key not in _OPTIONAL and not str(key).startswith("_"):
            raise _Bad(f"{where}.{key}", f"unknown key (expected {', '.join(_REQUIRED + _OPTIONAL)})")
    for key in _REQUIRED:
        if key not in raw:
            raise _Bad(f"{where}.{key}", "missing")
    nvml = _strings(raw["nvml"], f"{where}.nvml")
    for i, pattern in enumerate(nvml):
        try:
            re.compile(pattern, re.IGNORECASE)
        except re.error as e:
            raise _Bad(f"{where}.nvml[{i}]", f"not a valid regular expression ({e})") from None
    gres = _strings(raw["gres"], f"{where}.gres")
    for i, g in enumerate(gres):
        if g != g.strip().lower():
            raise _Bad(f"{where}.gres[{i}]", f"expected a lower-case name without spaces around it, got {_show(g)}")
    if not isinstance(raw["gpm"], bool):
        raise _Bad(f"{where}.gpm", f"expected true or false, got {_show(raw['gpm'])}")
    note = raw.get("tflops_note")
    if note is not None:
        _text(note, f"{where}.tflops_note")
    return GpuSpec(
        type=t, name=_text(raw["name"], f"{where}.name"),
        mem_gib=_positive(raw["mem_gib"], f"{where}.mem_gib"),
        bf16_tflops=_positive(raw["bf16_tflops"], f"{where}.bf16_tflops"),
        mem_bw_gbs=_positive(raw["mem_bw_gbs"], f"{where}.mem_bw_gbs"),
        power_w=_positive(raw["power_w"], f"{where}.power_w"),
        gpm=raw["gpm"], price=_positive(raw["price"], f"{where}.price"),
        price_source=_text(raw["price_source"], f"{where}.price_source"),
        spec_source=_text(raw["spec_source"], f"{where}.spec_source"),
        nvml=nvml, gres=gres, tflops_note=note)


# Keys a site may override: key -> GpuSpec field.
_OVERRIDE_FIELDS = {"mem_gib": "mem_gib", "bf16_tflops": "bf16_tflops", "tflops": "bf16_tflops",
                    "mem_bw_gbs": "mem_bw_gbs", "power_w": "power_w", "gpm": "gpm", "price": "price",
                    "name": "name"}


class Catalog:
    """GPU types by canonical name, with the gres and NVML names that lead to them.

    Catalog(data) validates a decoded piqc-catalog/1 document (ValueError,
    one line naming `source` and the bad key). Attributes: types (canonical
    type -> GpuSpec, in file order), fallback_price (USD per GPU-hour for a
    GPU of unknown type), fallback_why, prices_seen ("YYYY-MM"), source.
    """

    __slots__ = ("types", "fallback_price", "fallback_why", "prices_seen", "source", "_aliases", "_patterns")

    def __init__(self, data: Mapping[str, Any], source: str = "catalog"):
        try:
            types, fallback, why, seen = self._parse(data)
        except _Bad as e:
            raise ValueError(f"{source}: {e}") from None
        self._setup(types, fallback, why, seen, source)

    # -- construction -------------------------------------------------------

    @staticmethod
    def _parse(data: Any) -> tuple[dict[str, GpuSpec], float, str, str]:
        if not isinstance(data, Mapping):
            raise _Bad("catalog", f"expected a JSON object, got {_show(data)}")
        for key in data:
            if key not in _TOP_REQUIRED and not str(key).startswith("_"):
                raise _Bad(str(key), f"unknown key (expected {', '.join(_TOP_REQUIRED)})")
        for key in _TOP_REQUIRED:
            if key not in data:
                raise _Bad(key, "missing")
        if data["format"] != FORMAT:
            raise _Bad("format", f"expected {FORMAT!r}, got {_show(data['format'])}")
        seen = data["prices_seen"]
        if not isinstance(seen, str) or not _MONTH.match(seen):
            raise _Bad("prices_seen", f"expected a month as 'YYYY-MM', got {_show(seen)}")
        fb = data["fallback_price"]
        if not isinstance(fb, Mapping) or set(fb) - {"usd_per_gpu_hour", "why"} or "usd_per_gpu_hour" not in fb:
            raise _Bad("fallback_price", f"expected {{\"usd_per_gpu_hour\": number, \"why\": text}}, got {_show(fb)}")
        fallback = _positive(fb["usd_per_gpu_hour"], "fallback_price.usd_per_gpu_hour")
        why = _text(fb.get("why"), "fallback_price.why")
        raw_types = data["types"]
        if not isinstance(raw_types, Mapping) or not raw_types:
            raise _Bad("types", f"expected a non-empty object of GPU types, got {_show(raw_types)}")
        types = {t: _spec_from_file(t, raw) for t, raw in raw_types.items()}
        owner: dict[str, str] = {}
        for t, spec in types.items():
            for i, g in enumerate(spec.gres):
                if g in types and g != t:
                    raise _Bad(f"types.{t}.gres[{i}]", f"{g!r} is the name of another type")
                if owner.setdefault(g, t) != t:
                    raise _Bad(f"types.{t}.gres[{i}]", f"{g!r} already means {owner[g]!r}")
        return types, float(fallback), why, seen

    def _setup(self, types: dict[str, GpuSpec], fallback: float, why: str, seen: str, source: str) -> None:
        self.types = types
        self.fallback_price = fallback
        self.fallback_why = why
        self.prices_seen = seen
        self.source = source
        aliases: dict[str, str] = {}
        for t, spec in types.items():
            for g in spec.gres:
                aliases.setdefault(g, t)
        self._aliases = aliases
        # Compiled once per Catalog; file order decides between types.
        self._patterns = tuple((t, tuple(re.compile(p, re.IGNORECASE) for p in spec.nvml))
                               for t, spec in types.items() if spec.nvml)

    @classmethod
    def _from_parts(cls, types: dict[str, GpuSpec], fallback: float, why: str, seen: str, source: str) -> Catalog:
        cat = cls.__new__(cls)
        cat._setup(types, fallback, why, seen, source)
        return cat

    # -- lookups ------------------------------------------------------------

    def canonical(self, t: str | bytes | None) -> str | None:
        """A canonical type, a gres alias (any case) or a gres type Slurm's
        AutoDetect=nvml made from an NVML name ("nvidia_a100-sxm4-80gb")
        -> the canonical type; a MIG slice ("..._3g.40gb") or anything else
        -> None (the caller prices it by partition or fallback, as unknown)."""
        if t is None:
            return None
        if isinstance(t, bytes):
            t = t.decode("utf-8", "replace")
        key = str(t).strip().lower()
        if not key:
            return None
        if key in self.types:
            return key
        hit = self._aliases.get(key)
        if hit is not None:
            return hit
        if _MIG_PROFILE.search(key):
            return None
        return self.type_of_name(_GRES_SPACE.sub(" ", key))

    def spec(self, t: str | bytes | None) -> GpuSpec | None:
        """The GpuSpec of a canonical type or gres alias (any case); None if unknown."""
        c = self.canonical(t)
        return self.types.get(c) if c is not None else None

    def type_of_name(self, nvml_name: str | bytes | None) -> str | None:
        """NVML device name ("NVIDIA H100 80GB HBM3", b"Tesla T4") -> canonical type, or None."""
        if nvml_name is None:
            return None
        if isinstance(nvml_name, bytes):
            nvml_name = nvml_name.decode("utf-8", "replace")
        name = str(nvml_name).strip().strip("\x00")
        if not name:
            return None
        for t, patterns in self._patterns:
            for p in patterns:
                if p.search(name):
                    return t
        return None

    # -- overrides ----------------------------------------------------------

    def with_overrides(self, overrides: Mapping[str, Mapping[str, Any]]) -> Catalog:
        """A new Catalog with a site's changes: {type: {key: value}}.

        A type (or gres alias) the catalog knows has the given keys replaced;
        any other name adds a type, which needs mem_gib (other numbers default
        to None; a price of None means "not priced by the catalog", so the
        caller falls back). Keys: mem_gib, bf16_tflops (or tflops), mem_bw_gbs,
        power_w, gpm, price, name. A bad key or value raises ValueError
        "catalog.<type>.<key>: expected ..., got ...". This catalog is unchanged.
        """
        if not isinstance(overrides, Mapping):
            raise ValueError(f"catalog: expected a table of GPU types, got {_show(overrides)}")
        types = dict(self.types)
        for raw_name, changes in overrides.items():
            name = str(raw_name).strip().lower()
            target = name if name in self.types else self._aliases.get(name, name)
            where = f"catalog.{target}"
            if not isinstance(changes, Mapping):
                raise ValueError(f"{where}: expected a table of keys ({', '.join(_OVERRIDE_FIELDS)}), "
                                 f"got {_show(changes)}")
            fields = self._override_fields(where, changes)
            if target in types:
                old = types[target]
                if "price" in fields:
                    fields["price_source"] = ("site override" if fields["price"] is not None
                                              else "not priced (site override)")
                if fields.keys() - {"price", "price_source", "name"}:
                    fields["spec_source"] = f"site override (catalog: {old.spec_source})"
                types[target] = old._replace(**fields)
            else:
                if not _TYPE_NAME.match(target):
                    raise ValueError(f"{where}: expected a lower-case type name (letters, digits, '.', '_', '-'), "
                                     f"got {_show(raw_name)}")
                if fields.get("mem_gib") is None:
                    raise ValueError(f"{where}.mem_gib: expected a positive number for a new type, got nothing")
                types[target] = GpuSpec(
                    type=target, name=fields.get("name", target), mem_gib=fields["mem_gib"],
                    bf16_tflops=fields.get("bf16_tflops"), mem_bw_gbs=fields.get("mem_bw_gbs"),
                    power_w=fields.get("power_w"), gpm=fields.get("gpm", False), price=fields.get("price"),
                    price_source="site override" if fields.get("price") is not None else "not priced by the catalog",
                    spec_source="site override", nvml=(), gres=())
        return Catalog._from_parts(types, self.fallback_price, self.fallback_why, self.prices_seen,
                                   f"{self.source} + overrides")

    @staticmethod
    def _override_fields(where: str, changes: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if "tflops" in changes and "bf16_tflops" in changes:
            raise ValueError(f"{where}.tflops: expected one of tflops or bf16_tflops, got both")
        for key, value in changes.items():
            field = _OVERRIDE_FIELDS.get(key)
            if field is None:
                raise ValueError(f"{where}.{key}: expected one of {', '.join(_OVERRIDE_FIELDS)}, got an unknown key")
            if field == "gpm":
                if not isinstance(value, bool):
                    raise ValueError(f"{where}.{key}: expected true or false, got {_show(value)}")
            elif field == "name":
                if not isinstance(value, str) or not value.strip():
                    raise ValueError(f"{where}.{key}: expected a non-empty string, got {_show(value)}")
            elif field == "price" and value is None:
                pass
            elif not _is_number(value) or not value > 0 or value == float("inf"):
                what = "a positive number or null" if field == "price" else "a positive number"
                raise ValueError(f"{where}.{key}: expected {what}, got {_show(value)}")
            out[field] = value
        return out

    # -- value semantics ----------------------------------------------------

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Catalog):
            return NotImplemented
        return (self.types == other.types and self.fallback_price == other.fallback_price
                and self.fallback_why == other.fallback_why and self.prices_seen == other.prices_seen)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<Catalog {self.source}: {len(self.types)} types, prices seen {self.prices_seen}>"


def load_catalog(path: str | None = None) -> Catalog:
    """Read the catalog: the package's data/gpus.json, or the file at `path`.

    Read afresh on every call (no cache). A file that cannot be read, is not
    JSON or is not a valid piqc-catalog/1 raises ValueError with one line
    naming the file and the problem."""
    import json

    if path is None:
        from importlib import resources

        res = resources.files("piqc_slurm.data").joinpath("gpus.json")
        source = str(res)
        try:
            text = res.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"{source}: cannot read the catalog ({e})") from None
    else:
        source = str(path)
        try:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
        except OSError as e:
            raise ValueError(f"{source}: cannot read the catalog ({e.strerror or e})") from None
        except UnicodeDecodeError as e:
            raise ValueError(f"{source}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{source}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    return Catalog(data, source)


UNREADABLE_FALLBACK = 2.0


def without_types(reason: str) -> Catalog:
    """A catalog that knows no GPU type (every GPU unknown, priced at the fallback): what the
    Epilog uses when the package's catalog cannot be read, so a job's summary is still spooled."""
    return Catalog._from_parts({}, UNREADABLE_FALLBACK, reason, "1970-01", "none")
