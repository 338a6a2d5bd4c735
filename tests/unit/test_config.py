"""Config: strict decoding, search order, the example config and the docs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from piqc_slurm import config
from piqc_slurm.errors import ConfigError
from piqc_slurm.usage.catalog import load_catalog
from piqc_slurm.usage.prices import Prices

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "piqc_slurm" / "data" / "piqc.example.toml"


def write(tmp_path: Path, text: str) -> str:
    p = tmp_path / "piqc.toml"
    p.write_text(text)
    return str(p)


def test_defaults_without_any_file():
    cfg = config.load(env={})
    assert cfg.path is None
    assert cfg["sampler.interval"] == 1.0
    assert cfg.origins["sampler.interval"] == "default"


def test_search_order(tmp_path):
    env_file = write(tmp_path, 'spool_dir = "/from/env"\n')
    other = tmp_path / "other.toml"
    other.write_text('spool_dir = "/from/flag"\n')
    assert config.load(env={"PIQC_CONFIG": env_file})["spool_dir"] == "/from/env"
    cfg = config.load(str(other), env={"PIQC_CONFIG": env_file})
    assert cfg["spool_dir"] == "/from/flag" and cfg.origins["spool_dir"] == str(other)


def test_db_precedence(tmp_path):
    f = write(tmp_path, 'db = "sqlite:///cfg.db"\n')
    assert config.load(f, env={})["db"] == "sqlite:///cfg.db"
    assert config.load(f, env={"PIQC_DB": "sqlite:///env.db"})["db"] == "sqlite:///env.db"
    cfg = config.load(f, db="sqlite:///flag.db", env={"PIQC_DB": "sqlite:///env.db"})
    assert cfg["db"] == "sqlite:///flag.db" and cfg.origins["db"] == "--db"


@pytest.mark.parametrize("text, needle", [
    ("bogus = 1\n", "unknown key 'bogus'"),
    ("[sampler]\nintervall = 2\n", "unknown key 'sampler.intervall'"),
    ('[sampler]\ninterval = "fast"\n', "sampler.interval: expected a number, got 'fast'"),
    ("[sampler]\ninterval = 0\n", "sampler.interval: expected at least 0.1"),
    ('delivery = "email"\n', "delivery: expected one of push, shared-spool, spool-only"),
    ("syslog = 1\n", "syslog: expected true or false"),
    ('[prices]\nh100 = "cheap"\n', "prices.h100: expected a price"),
    ("[access]\nadmin_users = [1]\n", "access.admin_users: expected a list of strings"),
    ("sampler = 3\n", "[sampler]: expected a table"),
    ("cluster = \n", "not valid TOML"),
])
def test_bad_config_is_one_line_error_naming_file_and_key(tmp_path, text, needle):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as exc:
        config.load(path, env={})
    msg = str(exc.value)
    assert needle in msg and msg.startswith(path) and "\n" not in msg


def test_missing_named_file(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        config.load(str(tmp_path / "nope.toml"), env={})


def test_int_accepted_for_float_but_bool_is_not_an_int(tmp_path):
    assert config.load(write(tmp_path, "[sampler]\ninterval = 2\n"), env={})["sampler.interval"] == 2.0
    with pytest.raises(ConfigError):
        config.load(write(tmp_path, "[sampler]\ntimeline_bin = true\n"), env={})


def test_example_config_loads_and_covers_every_key():
    cfg = config.load(str(EXAMPLE), env={})
    text = EXAMPLE.read_text()
    for key, _ in config.iter_schema():
        name = key.rpartition(".")[2]
        pattern = rf"^\[{name}\]$" if isinstance(config.defaults()[key], dict) else rf"^{re.escape(name)} = "
        assert re.search(pattern, text, re.M), f"{key} missing from the example config"
    assert cfg["prices"]["h100"] == 4.0
    prices = Prices.from_config(cfg, load_catalog())
    # the example's own figures: h100 = 4.0, default = 2.0 for a type no catalog knows
    assert prices.gpu_rate("h100") == (4.0, "config", "h100")
    assert prices.gpu_rate("mi300x") == (2.0, "fallback", None)


def test_docs_cover_every_key():
    doc = (REPO / "docs" / "configuration.md").read_text()
    for key, _ in config.iter_schema():
        assert f"`{key}`" in doc, f"{key} is not documented in docs/configuration.md"


def test_config_show_round_trips(tmp_path):
    path = write(tmp_path, '[sampler]\ninterval = 2.5\n[prices]\nh100 = 4.5\n')
    cfg = config.load(path, env={})
    shown = config.to_toml(cfg)
    reparsed = tmp_path / "shown.toml"
    reparsed.write_text(shown)
    again = config.load(str(reparsed), env={})
    assert again.values == cfg.values
    assert f"interval = 2.5  # {path}" in shown


def test_cli_config_error_is_one_line_exit_2(tmp_path):
    path = write(tmp_path, "bogus = 1\n")
    r = subprocess.run([sys.executable, "-m", "piqc_slurm", "--config", path, "config", "show"],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("piqc-slurm: ") and "Traceback" not in r.stderr


def test_cli_version_and_help():
    r = subprocess.run([sys.executable, "-m", "piqc_slurm", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and "piqc-slurm, version" in r.stdout
    r = subprocess.run([sys.executable, "-m", "piqc_slurm", "--help"], capture_output=True, text=True)
    assert "--config PATH" in r.stdout and "--db URL" in r.stdout
