"""Fixtures for the gRPC compatibility suite: a real `scoria serve` on free loopback ports.

This suite runs in its own virtualenv, .venv-grpc (scripts/setup-python), because
tritonclient 2.51's gRPC client pins protobuf < 5. The server binary is $SCORIA_BIN (default
<repo>/target/debug/scoria). The session-wide `server` serves copies of the sample models
(models/*) and the test fixtures (tests/fixtures/models/*); tests that change a server's
state or need other flags start their own with `start_server`.
"""

import importlib.util
import os
import shutil
import signal
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


def scoria_binary():
    binary = Path(os.environ.get("SCORIA_BIN", REPO / "target" / "debug" / "scoria"))
    if not binary.is_file():
        pytest.fail(f"scoria binary not found at {binary} (build it, or set SCORIA_BIN)")
    return binary


_spec = importlib.util.spec_from_file_location(
    "scoria_compat_conftest", Path(__file__).resolve().parents[1] / "compat" / "conftest.py")
_compat = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_compat)
free_port = _compat._free_port


def make_repo(parent, names=None):
    """A model repository under `parent` with copies of the sample models and fixtures (all,
    or only `names`)."""
    repo = Path(parent) / "models"
    repo.mkdir()
    for src in (SAMPLE_MODELS, FIXTURE_MODELS):
        for entry in sorted(src.iterdir()):
            if entry.is_dir() and (names is None or entry.name in names):
                shutil.copytree(entry, repo / entry.name)
    return repo


class ScoriaServer:
    """`scoria serve --models REPO --http 127.0.0.1:P --grpc 127.0.0.1:Q [extra args]`."""

    def __init__(self, model_repo, extra_args=()):
        self.model_repo = Path(model_repo)
        http_port = free_port()
        self.http = f"127.0.0.1:{http_port}"
        self.grpc = f"127.0.0.1:{free_port(exclude={http_port})}"
        self.logdir = Path(tempfile.mkdtemp(prefix="scoria-grpc-log-"))
        self.err_path = self.logdir / "stderr.log"
        extra_args = [str(a) for a in extra_args]
        # The bare sample models are auto-completed (max_batch_size = this flag, default 4,
        # with dynamic batching); these tests send batches of up to 64 rows.
        if not any(a.startswith("--default-max-batch-size") for a in extra_args):
            extra_args = [*extra_args, "--default-max-batch-size", "64"]
        self.cmd = [str(scoria_binary()), "serve", "--models", str(model_repo),
                    "--http", self.http, "--grpc", self.grpc, *extra_args]
        with open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=err)
        self._wait_ready()

    def logs(self):
        try:
            text = self.err_path.read_text(errors="replace")[-8000:]
        except OSError as e:
            text = f"<{e}>"
        return f"command: {' '.join(self.cmd)}\n--- server stderr ---\n{text}"

    def _wait_ready(self):
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                self.kill()
                pytest.fail(f"scoria serve exited early\n{self.logs()}", pytrace=False)
            try:
                with opener.open(f"http://{self.http}/v2/health/ready", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            if time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"scoria serve not ready after {READY_TIMEOUT_S:.0f} s\n{self.logs()}",
                            pytrace=False)
            time.sleep(0.25)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self):
        """SIGTERM, then SIGKILL after 10 s."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        shutil.rmtree(self.logdir, ignore_errors=True)


@pytest.fixture(scope="session")
def model_repo():
    with tempfile.TemporaryDirectory(prefix="scoria-grpc-") as tmp:
        yield make_repo(tmp)


@pytest.fixture(scope="session")
def scoria(model_repo):
    """The session-wide server."""
    srv = ScoriaServer(model_repo)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="session")
def server(scoria):
    """The session-wide server's gRPC address, "127.0.0.1:PORT"."""
    return scoria.grpc


@pytest.fixture
def start_server(tmp_path):
    """`start_server(models=[...], args=[...])`: a server private to one test."""
    servers = []

    def start(models=None, args=()):
        parent = Path(tempfile.mkdtemp(prefix="repo-", dir=tmp_path))
        srv = ScoriaServer(make_repo(parent, models), args)
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.stop()


@pytest.fixture(scope="session")
def client(server):
    import tritonclient.grpc as grpcclient

    c = grpcclient.InferenceServerClient(url=server)
    try:
        yield c
    finally:
        c.close()
