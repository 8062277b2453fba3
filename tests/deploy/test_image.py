"""The OCI images scripts/build-image makes, run by podman as the image's non-root user
(uid 1000) with a read-only root filesystem and a model repository mounted read-only:
ready, tritonclient's inference matches onnxruntime's reference, SIGTERM drains and exits 0.

The images are built from the debug binary (SCORIA_IMAGE_PROFILE, default debug: the test
command has built it already; a release build would take CI ~10 minutes more). podman runs
with runc, the host network and explicit ulimits (crun fails on some cgroup setups)."""

import json
import os
import shutil
import socket
import subprocess
import tarfile
import time
import urllib.request

import numpy as np
import onnxruntime
import pytest
import tritonclient.http as httpclient

from conftest import REPO

PODMAN = ["podman", "--runtime", "runc"]
RUN_FLAGS = [
    "--network=host",
    "--ulimit", "nofile=20000:20000",
    "--ulimit", "nproc=4096:4096",
    "--read-only",
    "--user", "1000:1000",
]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    out = tmp_path_factory.mktemp("image")
    profile = os.environ.get("SCORIA_IMAGE_PROFILE", "debug")
    proc = subprocess.run(
        [str(REPO / "scripts" / "build-image"), "--profile", profile, "--out", str(out), "--tag", "test"],
        capture_output=True, text=True, timeout=1500,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    built = {}
    for line in proc.stdout.splitlines():
        archive, name, size = line.split()
        built[name] = (archive, int(size))
    assert sorted(built) == ["scoria:test", "scoria:test-ort"], proc.stdout
    for name, (_, size) in built.items():
        print(f"{name}: {size / 1e6:.1f} MB uncompressed ({profile} binary)")
    return built


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def digits_repo(tmp_path):
    repo = tmp_path / "models"
    shutil.copytree(REPO / "models" / "digits", repo / "digits")
    for p in [repo, *repo.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    return repo


def reference(x):
    sess = onnxruntime.InferenceSession(str(REPO / "models" / "digits" / "1" / "model.onnx"))
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, {"input": x})))


def wait_ready(port, name, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        state = subprocess.run([*PODMAN, "inspect", name, "--format", "{{.State.Status}}"],
                               capture_output=True, text=True).stdout.strip()
        assert state in ("running", "created", "configured"), logs(name)
        time.sleep(0.2)
    pytest.fail(f"{name} not ready in {timeout} s:\n{logs(name)}")


def logs(name):
    p = subprocess.run([*PODMAN, "logs", name], capture_output=True, text=True)
    return p.stdout + p.stderr


def test_images_are_offline_builds_with_the_contract_config(images):
    for name, (archive, size) in images.items():
        assert tarfile.is_tarfile(archive)
        with tarfile.open(archive) as t:
            assert "index.json" in t.getnames() and "oci-layout" in t.getnames()
        # The archive loads back into podman.
        loaded = subprocess.run([*PODMAN, "load", "-i", archive], capture_output=True, text=True)
        assert loaded.returncode == 0, loaded.stderr
        cfg = json.loads(subprocess.run([*PODMAN, "image", "inspect", name], capture_output=True,
                                        text=True, check=True).stdout)[0]["Config"]
        assert cfg["User"] == "1000:1000"
        assert cfg["Entrypoint"] == ["scoria"]
        assert cfg["Cmd"] == ["serve", "--http", "0.0.0.0:8080", "--grpc", "0.0.0.0:9000",
                              "--models", "/models"]
        assert "8080/tcp" in cfg["ExposedPorts"] and "9000/tcp" in cfg["ExposedPorts"]
        labels = cfg["Labels"]
        assert labels["org.opencontainers.image.title"] == "scoria"
        assert labels["org.opencontainers.image.version"]
        # One layer, no base image.
        history = subprocess.run([*PODMAN, "history", "--format", "{{.CreatedBy}}", name],
                                 capture_output=True, text=True, check=True).stdout
        assert "FROM" not in history or "scratch" in history


@pytest.mark.parametrize("variant", ["", "-ort"])
def test_image_serves_digits_read_only_and_drains_on_sigterm(images, tmp_path, variant):
    image = f"scoria:test{variant}"
    port = free_port()
    name = f"scoria-test-{os.getpid()}-{port}"
    repo = digits_repo(tmp_path)
    subprocess.run(
        [*PODMAN, "run", "-d", "--name", name, *RUN_FLAGS, "-v", f"{repo}:/models:ro",
         image, "serve", "--http", f"127.0.0.1:{port}", "--grpc", "none", "--models", "/models"],
        check=True, capture_output=True, text=True,
    )
    try:
        wait_ready(port, name)
        user = subprocess.run([*PODMAN, "exec", name, "scoria", "--version"],
                              capture_output=True, text=True)
        assert user.returncode == 0, user.stderr
        client = httpclient.InferenceServerClient(f"127.0.0.1:{port}")
        meta = client.get_model_metadata("digits")
        assert meta["name"] == "digits"
        rng = np.random.default_rng(7)
        x = rng.integers(0, 17, size=(4, 64)).astype(np.float32)
        inp = httpclient.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=True)
        res = client.infer("digits", [inp], outputs=[
            httpclient.InferRequestedOutput("probabilities", binary_data=True),
            httpclient.InferRequestedOutput("label", binary_data=True),
        ])
        ref = reference(x)
        np.testing.assert_allclose(res.as_numpy("probabilities"), ref["probabilities"],
                                   rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(res.as_numpy("label"), ref["label"])
        if variant == "-ort":
            # The -ort image runs models without a backend on ONNX Runtime, from inside it.
            assert "(ort" in logs(name), logs(name)
        # A read-only root: nothing can be written outside /tmp.
        w = subprocess.run([*PODMAN, "exec", name, "scoria", "keys", "generate", "/home/scoria/k.txt"],
                           capture_output=True, text=True)
        assert w.returncode != 0, "the root filesystem is writable"
        # SIGTERM: drain and exit 0.
        subprocess.run([*PODMAN, "kill", "--signal", "TERM", name], check=True, capture_output=True)
        code = subprocess.run([*PODMAN, "wait", name], capture_output=True, text=True,
                              timeout=60).stdout.strip()
        assert code == "0", logs(name)
        assert "shutdown requested" in logs(name)
    finally:
        subprocess.run([*PODMAN, "rm", "-f", name], capture_output=True)
