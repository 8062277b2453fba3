"""Fixtures for the studio's browser tests: a real `scoria serve`, Debian's headless chromium
driven through /usr/bin/chromedriver by selenium, and a folder for screenshots and figures.

The server comes from tests/compat/conftest.py (loaded under another module name so that both
suites can run in one pytest session). Screenshots and measured figures go to
$SCORIA_UI_ARTIFACTS (default <repo>/target/ui-artifacts), which git ignores.
"""

import importlib.util
import json
import os
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location(
    "scoria_compat_conftest", REPO / "tests" / "compat" / "conftest.py")
compat = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(compat)

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = Path(os.environ.get("SCORIA_UI_ARTIFACTS", REPO / "target" / "ui-artifacts"))

# The README's digits sample (an 8x8 zero).
DIGIT_ZERO = [0, 0, 5, 13, 9, 1, 0, 0, 0, 0, 13, 15, 10, 15, 5, 0, 0, 3, 15, 2, 0, 11, 8, 0, 0, 4,
              12, 0, 0, 8, 8, 0, 0, 5, 8, 0, 0, 9, 8, 0, 0, 4, 11, 0, 1, 12, 7, 0, 0, 2, 14, 5, 10,
              12, 0, 0, 0, 0, 6, 13, 10, 0, 0, 0]

# Shown as text, never run: a description and tags full of markup and quotes.
HOSTILE_DESCRIPTION = '<script>window.__pwned = "description"</script> "double" \'single\''
HOSTILE_TAG_KEY = '<img src=x onerror="window.__pwned=1">'
HOSTILE_TAG_VALUE = '"><script>window.__pwned = "tag"</script>'


def toml_string(s):
    return json.dumps(s)  # a JSON string is a valid TOML basic string


def http(url, method="GET", body=None, key=None, timeout=30):
    """(status, parsed JSON or text) of a request that bypasses any proxy."""
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def make_workspace(parent, sample=("digits", "lenet", "resnet"), broken=True, hostile=True):
    """A workspace: models/ with copies of the sample models, a model whose config.toml fails
    to load, and a model whose description and tags hold markup."""
    ws = Path(parent)
    models = ws / "models"
    models.mkdir(parents=True)
    compat.copy_models(compat.SAMPLE_MODELS, models, set(sample))
    if broken:
        b = models / "broken"
        shutil.copytree(compat.SAMPLE_MODELS / "digits" / "1", b / "1")
        (b / "config.toml").write_text('backend = "tract"\nmax_batch_sise = 4\n')
    if hostile:
        h = models / "hostile"
        shutil.copytree(compat.SAMPLE_MODELS / "digits" / "1", h / "1")
        (h / "config.toml").write_text(
            f"description = {toml_string(HOSTILE_DESCRIPTION)}\n[tags]\n"
            f"{toml_string(HOSTILE_TAG_KEY)} = {toml_string(HOSTILE_TAG_VALUE)}\n")
    return ws


def bench(ws, *args):
    """Records a run with `scoria bench` (in-process) in workspace `ws`."""
    cmd = [str(compat.scoria_binary()), "bench", "--workspace", str(ws), "--warmup", "0s",
           "--duration", "1s", *args]
    done = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, f"{' '.join(cmd)}: {done.returncode}\n{done.stderr}"


def start(ws, *args):
    return compat.ScoriaServer(ws / "models", ["--workspace", str(ws), *args])


@pytest.fixture(scope="session")
def artifacts():
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def figures(artifacts):
    """Measured figures (not assertions), written to figures.json at the end."""
    found = {}
    yield found
    (artifacts / "figures.json").write_text(json.dumps(found, indent=2) + "\n")
    for k, v in found.items():
        print(f"studio figure: {k} = {v}")


def new_browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    for path in (CHROMIUM, CHROMEDRIVER):
        if not path.exists():
            pytest.fail(f"{path} is missing: scripts/install-system-deps installs chromium and "
                        "chromium-driver", pytrace=False)
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1440,1000", "--no-first-run", "--no-default-browser-check",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--disable-extensions", "--disable-default-apps",
                "--hide-scrollbars", "--force-color-profile=srgb"):
        opts.add_argument(arg)
    opts.add_argument(f"--user-data-dir={tempfile.mkdtemp(prefix='scoria-ui-chromium-')}")
    opts.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    service = Service(executable_path=str(CHROMEDRIVER))
    driver = webdriver.Chrome(service=service, options=opts)
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(30)
    return driver


class Browser:
    """A chromium session that keeps every network request it saw (performance log)."""

    def __init__(self):
        self.driver = new_browser()
        # Whatever the browser showed before the tests (its new-tab page) is not theirs.
        self.driver.get("about:blank")
        self.driver.get_log("performance")
        self.requests = []

    def drain_log(self):
        for entry in self.driver.get_log("performance"):
            msg = json.loads(entry["message"])["message"]
            if msg.get("method") == "Network.requestWillBeSent":
                self.requests.append(msg["params"]["request"]["url"])
        return self.requests

    def quit(self):
        try:
            self.drain_log()
        finally:
            self.driver.quit()


@pytest.fixture(scope="module")
def browser():
    b = Browser()
    try:
        yield b
    finally:
        b.quit()
