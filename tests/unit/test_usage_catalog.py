"""The GPU catalog (piqc_slurm/data/gpus.json) and its loader (piqc_slurm.usage.catalog):
real NVML names, gres aliases, the shipped figures and prices, site overrides,
and what a broken catalog file gives."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from piqc_slurm.usage import catalog as catalog_mod
from piqc_slurm.usage.catalog import Catalog, GpuSpec, load_catalog

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
PACKAGE_FILE = Path(catalog_mod.__file__).resolve().parents[1] / "data" / "gpus.json"
TYPES = ("h200", "h100", "h100-pcie", "h100-nvl", "a100-80", "a100-40", "l40s", "l40", "l4", "a10g", "a10",
         "a30", "t4", "v100-16", "v100-32")


def nvml_fixture() -> list[tuple[str, str | None]]:
    rows = []
    for line in (FIXTURES / "nvml_names.txt").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, expected = line.split("\t")
        rows.append((name, None if expected == "none" else expected))
    return rows


@pytest.fixture(scope="module")
def cat() -> Catalog:
    return load_catalog()


def raw() -> dict:
    return json.loads(PACKAGE_FILE.read_text())


# -- NVML names ------------------------------------------------------------

def test_fixture_covers_every_type_and_some_strangers():
    rows = nvml_fixture()
    assert {t for _, t in rows if t} == set(TYPES)
    assert sum(1 for _, t in rows if t is None) >= 5


@pytest.mark.parametrize(("name", "expected"), nvml_fixture())
def test_every_real_nvml_name_maps_to_its_type(cat, name, expected):
    assert cat.type_of_name(name) == expected
    assert cat.type_of_name(name.encode()) == expected            # old pynvml returns bytes
    assert cat.type_of_name(f"  {name.upper()}\n") == expected    # case and padding do not matter


@pytest.mark.parametrize(("name", "expected"), nvml_fixture())
def test_no_real_name_matches_two_types(cat, name, expected):
    hits = [t for t, spec in cat.types.items() if any(re.search(p, name, re.IGNORECASE) for p in spec.nvml)]
    assert hits == ([expected] if expected else [])


def test_look_alike_names_are_told_apart(cat):
    assert cat.type_of_name("NVIDIA L4") == "l4" and cat.type_of_name("NVIDIA L40") == "l40"
    assert cat.type_of_name("NVIDIA L40S") == "l40s"
    assert cat.type_of_name("NVIDIA A10") == "a10" and cat.type_of_name("NVIDIA A100 80GB PCIe") == "a100-80"
    assert cat.type_of_name("NVIDIA A10G") == "a10g" and cat.type_of_name("NVIDIA A30") == "a30"
    assert cat.type_of_name("NVIDIA H100 PCIe") == "h100-pcie" and cat.type_of_name("NVIDIA H100 NVL") == "h100-nvl"
    assert cat.type_of_name("NVIDIA H100 80GB HBM3") == "h100"
    assert cat.type_of_name("Tesla V100S-PCIE-32GB") is None     # V100S: another card, not in the catalog


def test_names_with_no_memory_follow_the_plain_gres_choice(cat):
    assert cat.type_of_name("NVIDIA A100") == "a100-80" == cat.canonical("a100")
    assert cat.type_of_name("Tesla V100") == "v100-32" == cat.canonical("v100")
    assert cat.type_of_name("NVIDIA A100-PG509-200") is None     # something after the model: not guessed


@pytest.mark.parametrize("name", [None, "", "   ", b"", "\x00"])
def test_no_name_is_no_type(cat, name):
    assert cat.type_of_name(name) is None


# -- gres names --------------------------------------------------------------

def test_every_gres_alias_resolves(cat):
    for t, spec in cat.types.items():
        assert cat.canonical(t) == t and cat.canonical(t.upper()) == t
        for alias in spec.gres:
            assert cat.canonical(alias) == t, alias
            assert cat.canonical(alias.upper()) == t, alias
            assert cat.spec(alias) is spec


@pytest.mark.parametrize(("gres", "expected"), [
    # the gres types the cluster tests use
    ("h100", "h100"), ("h200", "h200"), ("a100", "a100-80"), ("a10g", "a10g"), ("l4", "l4"),
    ("l40s", "l40s"), ("t4", "t4"),
    # spellings sites use
    ("H100_SXM", "h100"), ("h100-sxm", "h100"), ("h100_80gb", "h100"), ("a100_40gb", "a100-40"),
    ("A100-80", "a100-80"), ("v100", "v100-32"), ("v100_16gb", "v100-16"), ("h100_nvl", "h100-nvl"),
    # Slurm AutoDetect=nvml types (the NVML name, lower case, "_" for " "), as seen in public sbatch scripts
    ("nvidia_a100-sxm4-80gb", "a100-80"), ("nvidia_a100-pcie-40gb", "a100-40"),
    ("tesla_v100-sxm2-32gb", "v100-32"), ("tesla_v100-pcie-32gb", "v100-32"),
    ("tesla_v100-sxm2-16gb", "v100-16"), ("tesla_t4", "t4"), ("nvidia_a40", None),
    ("nvidia_h100_80gb_hbm3", "h100"), ("nvidia_l40s", "l40s"),
    # MIG slices are not priced as whole GPUs; unknown names are unknown
    ("nvidia_a100-sxm4-80gb_3g.40gb", None), ("3g.40gb", None), ("rtx4090", None), ("gpu", None),
    ("", None), (None, None),
])
def test_canonical(cat, gres, expected):
    assert cat.canonical(gres) == expected
    assert cat.spec(gres) == (cat.types[expected] if expected else None)


def test_gres_aliases_are_lower_case_and_unique(cat):
    seen: dict[str, str] = {}
    for t, spec in cat.types.items():
        for alias in spec.gres:
            assert alias == alias.lower() and " " not in alias
            assert seen.setdefault(alias, t) == t, f"{alias} in {seen[alias]} and {t}"


# -- the shipped figures ------------------------------------------------------

def test_types_are_the_documented_ones(cat):
    assert tuple(cat.types) == TYPES
    assert all(isinstance(s, GpuSpec) and s.type == t for t, s in cat.types.items())


@pytest.mark.parametrize("t", TYPES)
def test_every_type_is_complete_and_sane(cat, t):
    s = cat.types[t]
    assert s.name.startswith("NVIDIA ")
    assert 8 <= s.mem_gib <= 200
    assert 10 <= s.bf16_tflops <= 2500                  # dense: a sparse figure for H100 would be 1979
    assert 100 <= s.mem_bw_gbs <= 10000
    assert 30 <= s.power_w <= 1500
    assert 0 < s.price <= 20
    assert s.gpm is t.startswith(("h100", "h200"))
    assert s.price_source.strip() and s.spec_source.strip()
    assert s.nvml and s.gres and isinstance(s.nvml, tuple) and isinstance(s.gres, tuple)
    assert t in s.gres                                  # the canonical name is a gres name too
    if t in ("t4", "v100-16", "v100-32"):
        assert "no BF16" in s.tflops_note and "FP16" in s.tflops_note


@pytest.mark.parametrize(("t", "mem", "tflops", "bw", "watts"), [
    # hand-written from the datasheet figures in ANALYSIS-NOTES (Specs)
    ("h100", 80, 989, 3350, 700),
    ("h200", 141, 989, 4800, 700),
    ("a100-80", 80, 312, 2039, 400),
    ("a100-40", 40, 312, 1555, 400),
    ("l40s", 48, 362, 864, 350),
    ("l4", 24, 121, 300, 72),
    ("a10", 24, 125, 600, 150),
    ("t4", 16, 65, 320, 70),
    ("v100-16", 16, 125, 900, 300),
    ("v100-32", 32, 125, 900, 300),
    # checked against datasheet figures for the types the notes do not list
    ("l40", 48, 181, 864, 300),
    ("a30", 24, 165, 933, 165),
    ("h100-pcie", 80, 756, 2000, 350),
    ("h100-nvl", 94, 835, 3900, 400),
])
def test_datasheet_spot_checks(cat, t, mem, tflops, bw, watts):
    s = cat.types[t]
    assert (s.mem_gib, s.bf16_tflops, s.mem_bw_gbs, s.power_w) == (mem, tflops, bw, watts)


def test_a10g_draws_more_power_than_the_a10(cat):
    assert cat.types["a10g"].power_w == 300 and cat.types["a10"].power_w == 150


@pytest.mark.parametrize(("t", "low", "high"), [
    # ANALYSIS-NOTES (Prices): on-demand public lists seen 2026-05..11
    ("h200", 4.50, 4.59), ("h100", 3.99, 4.29), ("a100-80", 2.79, 2.79), ("a100-40", 1.99, 1.99),
    ("l40s", 1.09, 1.95), ("l4", 0.80, 0.80), ("a10", 1.01, 1.29), ("a10g", 1.01, 1.29), ("t4", 0.59, 0.59),
    ("v100-16", 0.79, 0.79), ("v100-32", 0.79, 0.79),
])
def test_prices_lie_in_the_noted_ranges(cat, t, low, high):
    assert low <= cat.types[t].price <= high


def test_price_date_and_fallback(cat):
    assert cat.prices_seen == "2026-11"
    assert cat.fallback_price == 2.00
    assert "unknown" in cat.fallback_why
    assert raw()["format"] == "piqc-catalog/1"


# -- overrides ---------------------------------------------------------------

def test_with_overrides_replaces_and_adds_without_touching_the_original(cat):
    before = cat.types["h100"]
    new = cat.with_overrides({
        "h100": {"price": 2.5, "tflops": 900},
        "A100": {"mem_bw_gbs": 1935, "power_w": 300},          # a gres alias names the existing type
        "b200": {"mem_gib": 180, "bf16_tflops": 2250, "price": 6.0, "name": "NVIDIA B200", "gpm": True},
        "mi300x": {"mem_gib": 192},
    })
    assert new is not cat and cat.types["h100"] is before and cat.types["h100"].price == 3.99
    h = new.types["h100"]
    assert (h.price, h.bf16_tflops, h.mem_gib, h.power_w) == (2.5, 900, 80, 700)
    assert h.price_source == "site override" and h.spec_source.startswith("site override")
    assert (new.types["a100-80"].mem_bw_gbs, new.types["a100-80"].power_w) == (1935, 300)
    assert new.canonical("nvidia_a100-sxm4-80gb") == "a100-80"    # names still resolve
    b = new.spec("B200")
    assert (b.type, b.name, b.mem_gib, b.bf16_tflops, b.price, b.gpm) == ("b200", "NVIDIA B200", 180, 2250, 6.0, True)
    m = new.spec("mi300x")
    assert (m.mem_gib, m.bf16_tflops, m.mem_bw_gbs, m.power_w, m.price, m.gpm) == (192, None, None, None, None, False)
    assert m.name == "mi300x"
    assert cat.spec("b200") is None and new.fallback_price == cat.fallback_price
    assert new.with_overrides({"h100": {"price": None}}).types["h100"].price is None


@pytest.mark.parametrize(("overrides", "message"), [
    ({"h100": {"colour": "green"}}, "catalog.h100.colour: expected one of mem_gib, bf16_tflops, tflops"),
    ({"h100": {"price": "cheap"}}, "catalog.h100.price: expected a positive number or null, got 'cheap'"),
    ({"h100": {"price": -1}}, "catalog.h100.price: expected a positive number or null, got -1"),
    ({"h100": {"mem_gib": True}}, "catalog.h100.mem_gib: expected a positive number, got True"),
    ({"h100": {"gpm": "yes"}}, "catalog.h100.gpm: expected true or false, got 'yes'"),
    ({"h100": {"name": ""}}, "catalog.h100.name: expected a non-empty string, got ''"),
    ({"h100": {"tflops": 1, "bf16_tflops": 2}}, "catalog.h100.tflops: expected one of tflops or bf16_tflops"),
    ({"h100": 4.0}, "catalog.h100: expected a table of keys"),
    ({"a100": {"watts": 1}}, "catalog.a100-80.watts: expected one of"),
    ({"b200": {"price": 6.0}}, "catalog.b200.mem_gib: expected a positive number for a new type, got nothing"),
    ({"B 200": {"mem_gib": 1}}, "catalog.b 200: expected a lower-case type name"),
])
def test_with_overrides_rejects_bad_keys_and_values(cat, overrides, message):
    with pytest.raises(ValueError) as e:
        cat.with_overrides(overrides)
    assert str(e.value).startswith(message)
    assert "\n" not in str(e.value)


# -- loading -----------------------------------------------------------------

def test_load_twice_gives_equal_but_distinct_catalogs():
    a, b = load_catalog(), load_catalog()
    assert a == b and a is not b and a.types is not b.types
    assert load_catalog(str(PACKAGE_FILE)) == a


def test_nothing_is_loaded_or_cached_at_import():
    assert not [v for v in vars(catalog_mod).values() if isinstance(v, Catalog)]
    assert not hasattr(load_catalog, "cache_info")


def _write(tmp_path: Path, doc) -> str:
    p = tmp_path / "gpus.json"
    p.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return str(p)


def _broken(change) -> dict:
    doc = raw()
    change(doc)
    return doc


@pytest.mark.parametrize(("doc", "problem"), [
    ('{"format": "piqc-catalog/1", "types": {', "not valid JSON"),
    (_broken(lambda d: d.update(format="piqc-catalog/2")), "format: expected 'piqc-catalog/1'"),
    (_broken(lambda d: d.pop("fallback_price")), "fallback_price: missing"),
    (_broken(lambda d: d.update(prices_seen="Nov 2026")), "prices_seen: expected a month"),
    (_broken(lambda d: d["types"]["h100"].pop("mem_bw_gbs")), "types.h100.mem_bw_gbs: missing"),
    (_broken(lambda d: d["types"]["h100"].update(price="4")), "types.h100.price: expected a positive number"),
    (_broken(lambda d: d["types"]["h100"].update(gpm=1)), "types.h100.gpm: expected true or false"),
    (_broken(lambda d: d["types"]["l4"].update(nvml=["\\bL4("])), "types.l4.nvml[0]: not a valid regular"),
    (_broken(lambda d: d["types"]["l4"].update(nvml=[])), "types.l4.nvml: expected a non-empty list"),
    (_broken(lambda d: d["types"]["l4"].update(gres=["L4"])), "types.l4.gres[0]: expected a lower-case name"),
    (_broken(lambda d: d["types"]["l4"]["gres"].append("a100")), "types.l4.gres[2]: 'a100' already means"),
    (_broken(lambda d: d["types"]["l4"]["gres"].append("t4")), "types.l4.gres[2]: 't4' is the name of another"),
    (_broken(lambda d: d["types"]["h100"].update(tdp=700)), "types.h100.tdp: unknown key"),
    (_broken(lambda d: d.update(typos={})), "typos: unknown key"),
    ([1, 2], "catalog: expected a JSON object"),
])
def test_a_bad_catalog_file_is_one_line_naming_the_file(tmp_path, doc, problem):
    path = _write(tmp_path, doc)
    with pytest.raises(ValueError) as e:
        load_catalog(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: ") and problem in msg, msg
    assert "\n" not in msg


def test_a_missing_catalog_file_is_one_line_naming_it(tmp_path):
    path = str(tmp_path / "nope.json")
    with pytest.raises(ValueError, match=r"nope\.json: cannot read the catalog") as e:
        load_catalog(path)
    assert "\n" not in str(e.value)


def test_catalog_from_a_dict_validates_too():
    with pytest.raises(ValueError, match=r"^site: format: expected"):
        Catalog({**raw(), "format": "x"}, source="site")
    assert Catalog(raw()) == load_catalog()
