"""The digest in a real browser: headless Chromium (the Debian package, docker-slurm/setup.sh
installs it) loads the page from a file. No console message (a blocked request or script logs
one), no network request the page made (Chromium's net log: requests the page initiated carry
its origin, the browser's own background requests carry none), a job named
`<script>alert(1)</script>` shown as text, and a screenshot kept for a person to look at.
Control pages prove each check can fail."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SCREENSHOT = Path(os.environ.get("PIQC_SCREENSHOT_DIR", "/tmp")) / "piqc-digest-screenshot.png"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-default-apps",
         "--disable-extensions", "--enable-logging=stderr", "--v=0"]
HOSTILE = "<script>alert(1)</script>"


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    assert exe, "no chromium: run docker-slurm/setup.sh (it installs the Debian package)"
    return exe


def load(page: Path, tmp: Path) -> tuple[str, list[str], list[str]]:
    """The DOM after load, the console lines, and the URLs of requests the page initiated."""
    net = tmp / f"{page.stem}.net.json"
    r = subprocess.run([chromium(), *FLAGS, f"--user-data-dir={tmp / 'profile'}", f"--log-net-log={net}",
                        "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    console = [ln for ln in r.stderr.splitlines() if ":CONSOLE" in ln]
    events = json.loads(net.read_text())["events"]
    requests = sorted({e["params"]["url"] for e in events
                       if "url" in e.get("params", {}) and e["params"].get("initiator") not in (None, "not an origin")
                       and not e["params"]["url"].startswith(("file:", "data:"))})
    return r.stdout, console, requests


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("browser")
    scenario = json.loads((EXAMPLES / "batch-of-one" / "scenario.json").read_text())
    scenario["jobs"][0]["name"] = HOSTILE            # users name their jobs; the admin's page must not run it
    scenario["jobs"][0]["account"] = "a|b"
    (d / "s.json").write_text(json.dumps(scenario))
    (d / "piqc.toml").write_text("")
    base = [sys.executable, "-m", "piqc_slurm", "--config", str(d / "piqc.toml"), "--db", f"sqlite:///{d}/s.db"]
    env = {"TZ": "UTC", "PATH": "/usr/bin:/bin"}
    for argv in (["simulate", "-q", "--scenario", str(d / "s.json")], ["analyze", "-q", "-S", "2026-11-01",
                                                                       "-E", "2026-12-01"],
                 ["digest", "-S", "2026-11-20", "-E", "2026-11-27", "-o", str(d / "digest.html")]):
        r = subprocess.run(base + argv, capture_output=True, text=True, env=env)
        assert r.returncode == 0, r.stderr
    return d / "digest.html"


def test_the_page_loads_clean_and_shows_a_hostile_name_as_text(page, tmp_path):
    dom, console, requests = load(page, tmp_path)
    assert console == [] and requests == []
    assert "GPU batch spend" in dom and "What to change" in dom
    # the name is in the page as text (escaped in the DOM's serialisation), never as an element
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom
    assert re.search(r"<script\b", dom) is None
    assert "a|b" in dom


def test_a_screenshot_for_a_person(page, tmp_path):
    SCREENSHOT.unlink(missing_ok=True)
    r = subprocess.run([chromium(), *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--hide-scrollbars",
                        "--window-size=1200,1800", f"--screenshot={SCREENSHOT}", page.as_uri()],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert SCREENSHOT.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and SCREENSHOT.stat().st_size > 20_000
    print(f"screenshot: {SCREENSHOT}")


def test_the_checks_catch_what_they_look_for(tmp_path):
    """A page that fetches from the network and runs a script, without and with the digest's CSP."""
    bare = tmp_path / "bare.html"
    bare.write_text('<!DOCTYPE html><html><body><img src="http://192.0.2.1/x.png">'
                    '<script>console.error("ran")</script></body></html>')
    _dom, console, requests = load(bare, tmp_path)
    assert requests == ["http://192.0.2.1/x.png"] and any('"ran"' in ln for ln in console)
    template = (Path(__file__).resolve().parents[2] / "piqc_slurm" / "report" / "templates"
                / "digest.html.j2").read_text()
    meta = re.search(r'<meta http-equiv="Content-Security-Policy"[^>]*>', template).group(0)
    guarded = tmp_path / "guarded.html"
    guarded.write_text(bare.read_text().replace("<body>", f"<head>{meta}</head><body>"))
    _dom, console, requests = load(guarded, tmp_path)
    assert requests == [] and len(console) == 2 and all("Content Security Policy" in ln for ln in console)
