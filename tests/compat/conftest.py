"""Fixtures for the client-compatibility tests: a real `scoria serve` on a free loopback port.

The server binary is $SCORIA_BIN (default <repo>/target/debug/scoria). The session-wide
`server` serves a temporary model repository holding copies of the sample models (models/*)
and the test fixtures (tests/fixtures/models/*). Tests that change a server's state (load,
unload, shutdown) or need other flags start their own with `start_server`.
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


def scoria_binary():
    binary = Path(os.environ.get("SCORIA_BIN", REPO / "target" / "debug" / "scoria"))
    if not binary.is_file():
        pytest.fail(f"scoria binary not found at {binary} (build it, or set SCORIA_BIN)")
    return binary


def _free_port(exclude=()):
    """A port free on 127.0.0.1 now, other than those in `exclude` (the kernel may hand the
    same ephemeral port to two binds in a row once the first socket is closed)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in exclude:
            return port


def copy_models(src, dst, names=None):
    """Copies every model folder of `src` (or only those in `names`) into `dst`."""
    if not src.is_dir():
        return
    for entry in sorted(src.iterdir()):
        if entry.is_dir() and (names is None or entry.name in names):
            shutil.copytree(entry, dst / entry.name)


def make_repo(parent, names=None):
    """A model repository under `parent` with copies of the sample models and fixtures
    (all of them, or only `names`)."""
    repo = Path(parent) / "models"
    repo.mkdir()
    copy_models(SAMPLE_MODELS, repo, names)
    copy_models(FIXTURE_MODELS, repo, names)
    if names is not None:
        missing = set(names) - {p.name for p in repo.iterdir()}
        assert not missing, f"no such sample model or fixture: {sorted(missing)}"
    return repo


def _tail(path, limit=8000):
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        return f"<could not read {path}: {e}>"
    return text[-limit:]


class ScoriaServer:
    """A running `scoria serve --models REPO --http 127.0.0.1:PORT [extra args]`."""

    def __init__(self, model_repo, extra_args=()):
        self.model_repo = Path(model_repo)
        self.port = _free_port()
        self.addr = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.addr}"
        self.logdir = Path(tempfile.mkdtemp(prefix="scoria-compat-log-"))
        self.out_path = self.logdir / "stdout.log"
        self.err_path = self.logdir / "stderr.log"
        extra_args = [str(a) for a in extra_args]
        # The bare sample models are auto-completed (max_batch_size = this flag, default 4,
        # with dynamic batching); these tests send batches of up to 64 rows.
        if not any(a.startswith("--default-max-batch-size") for a in extra_args):
            extra_args = [*extra_args, "--default-max-batch-size", "64"]
        # Each server gets its own gRPC port rather than the default 8001 (or the one given).
        if not any(a.startswith("--grpc") for a in extra_args):
            self.grpc_addr = f"127.0.0.1:{_free_port(exclude={self.port})}"
            extra_args = ["--grpc", self.grpc_addr, *extra_args]
        else:
            self.grpc_addr = None
        self.cmd = [str(scoria_binary()), "serve", "--models", str(model_repo),
                    "--http", self.addr, *extra_args]
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=err)
        self._wait_ready()

    def logs(self):
        return (f"command: {' '.join(self.cmd)}\n--- server stderr ---\n{_tail(self.err_path)}"
                f"\n--- server stdout ---\n{_tail(self.out_path, 2000)}")

    def fail(self, reason):
        self.kill()
        pytest.fail(f"{reason}\n{self.logs()}", pytrace=False)

    def _wait_ready(self):
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            code = self.proc.poll()
            if code is not None:
                self.fail(f"scoria serve exited early with status {code}")
            try:
                with opener.open(f"{self.url}/v2/health/ready", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            if time.monotonic() > deadline:
                self.fail(f"scoria serve not ready on {self.addr} after {READY_TIMEOUT_S:.0f} s")
            time.sleep(0.25)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self):
        """SIGTERM, then SIGKILL after 10 s; removes the logs."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        shutil.rmtree(self.logdir, ignore_errors=True)


@pytest.fixture(scope="session")
def model_repo():
    """A temporary model repository: copies of models/* and tests/fixtures/models/*."""
    with tempfile.TemporaryDirectory(prefix="scoria-compat-") as tmp:
        yield make_repo(tmp)


@pytest.fixture(scope="session")
def server(model_repo):
    """Starts `scoria serve` and yields its address "127.0.0.1:PORT"; stops it at the end."""
    srv = ScoriaServer(model_repo)
    try:
        yield srv.addr
    finally:
        srv.stop()


@pytest.fixture
def start_server(tmp_path):
    """A factory for servers private to one test: `start_server(models=[...], args=[...],
    prepare=fn)` copies the named sample models/fixtures (default: all) into a fresh
    repository, calls `prepare(repo)` if given (to edit configs), starts `scoria serve` on it
    and returns the ScoriaServer; every server is stopped afterwards."""
    servers = []

    def start(models=None, args=(), prepare=None):
        parent = Path(tempfile.mkdtemp(prefix="repo-", dir=tmp_path))
        repo = make_repo(parent, models)
        if prepare is not None:
            prepare(repo)
        srv = ScoriaServer(repo, args)
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.stop()


@pytest.fixture(scope="session")
def client(server):
    import tritonclient.http as httpclient

    c = httpclient.InferenceServerClient(
        url=server, connection_timeout=60.0, network_timeout=600.0)
    try:
        yield c
    finally:
        c.close()
