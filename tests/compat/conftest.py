"""Fixtures for the client-compatibility tests: a real `scoria serve` on a free loopback port.

The server binary is $SCORIA_BIN (default <repo>/target/debug/scoria). It serves a temporary
model repository holding copies of the sample models (models/*) and the test fixtures
(tests/fixtures/models/*).
"""

import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SAMPLE_MODELS = REPO / "models"
FIXTURE_MODELS = REPO / "tests" / "fixtures" / "models"
READY_TIMEOUT_S = 120.0


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _copy_models(src, dst):
    if not src.is_dir():
        return
    for entry in sorted(src.iterdir()):
        if entry.is_dir():
            shutil.copytree(entry, dst / entry.name)


def _tail(path, limit=8000):
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        return f"<could not read {path}: {e}>"
    return text[-limit:]


@pytest.fixture(scope="session")
def model_repo():
    """A temporary model repository: copies of models/* and tests/fixtures/models/*."""
    with tempfile.TemporaryDirectory(prefix="scoria-compat-") as tmp:
        repo = Path(tmp) / "models"
        repo.mkdir()
        _copy_models(SAMPLE_MODELS, repo)
        _copy_models(FIXTURE_MODELS, repo)
        yield repo


@pytest.fixture(scope="session")
def server(model_repo):
    """Starts `scoria serve` and yields its address "127.0.0.1:PORT"; kills it at the end."""
    binary = Path(os.environ.get("SCORIA_BIN", REPO / "target" / "debug" / "scoria"))
    if not binary.is_file():
        pytest.fail(f"scoria binary not found at {binary} (build it, or set SCORIA_BIN)")

    port = _free_port()
    addr = f"127.0.0.1:{port}"
    logdir = Path(tempfile.mkdtemp(prefix="scoria-compat-log-"))
    out_path, err_path = logdir / "stdout.log", logdir / "stderr.log"
    cmd = [str(binary), "serve", "--models", str(model_repo), "--http", addr]
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err)

    def fail(reason):
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        pytest.fail(
            f"{reason}\ncommand: {' '.join(cmd)}\n--- server stderr ---\n{_tail(err_path)}"
            f"\n--- server stdout ---\n{_tail(out_path, 2000)}",
            pytrace=False,
        )

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        code = proc.poll()
        if code is not None:
            fail(f"scoria serve exited early with status {code}")
        try:
            with opener.open(f"http://{addr}/v2/health/ready", timeout=2) as resp:
                if resp.status == 200:
                    break
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        if time.monotonic() > deadline:
            fail(f"scoria serve not ready on {addr} after {READY_TIMEOUT_S:.0f} s")
        time.sleep(0.25)

    try:
        yield addr
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(logdir, ignore_errors=True)


@pytest.fixture(scope="session")
def client(server):
    import tritonclient.http as httpclient

    c = httpclient.InferenceServerClient(
        url=server, connection_timeout=60.0, network_timeout=600.0)
    try:
        yield c
    finally:
        c.close()
