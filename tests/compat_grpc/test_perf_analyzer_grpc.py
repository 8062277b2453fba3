"""Triton's perf_analyzer against scoria over gRPC (`-i grpc`), unary and `--streaming`.

perf_analyzer ships in the tritonclient wheel (.venv-grpc/bin/perf_analyzer); it links
libcudart.so.12 (the nvidia-cuda-runtime-cu12 wheel; no GPU is used) and Debian's
libb64.so.0d (scripts/install-system-deps). Over gRPC it reads ModelMetadata, ModelConfig
and ServerMetadata, sends ModelInfer (or a ModelStreamInfer stream), and reads
ModelStatistics for its server-side summary. Runs are short and accept any stability, as in
tests/compat/test_perf_analyzer.py: the assertions are that every request succeeded, the
throughput is positive and the server's statistics were read. The sample models set no
max_batch_size, so the server auto-completes their config (dynamic batching): perf_analyzer
takes the shapes from ModelConfig, without `--shape`.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

RUN_TIMEOUT_S = 120


def perf_analyzer():
    """(binary path, environment with libcudart.so.12 on LD_LIBRARY_PATH)."""
    import tritonclient

    candidates = [Path(sys.prefix) / "bin" / "perf_analyzer",
                  Path(tritonclient.__file__).parent / "bin" / "perf_analyzer"]
    binary = next((c for c in candidates if c.is_file()), None)
    if binary is None:
        pytest.fail(f"perf_analyzer not found in {[str(c) for c in candidates]}; "
                    "run scripts/setup-python")
    import nvidia.cuda_runtime as cudart_pkg

    libdir = Path(list(cudart_pkg.__path__)[0]) / "lib"
    if not (libdir / "libcudart.so.12").is_file():
        pytest.fail(f"libcudart.so.12 not found in {libdir}")
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        p for p in [str(libdir), env.get("LD_LIBRARY_PATH", "")] if p)
    return binary, env


def run(server, model, args):
    binary, env = perf_analyzer()
    cmd = [str(binary), "-m", model, "-u", server, "-i", "grpc",
           "--measurement-interval", "500", "--stability-percentage", "999",
           "--max-trials", "4", *args]
    try:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=RUN_TIMEOUT_S, env=env)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"perf_analyzer ran past {RUN_TIMEOUT_S} s: {' '.join(cmd)}\n"
                    f"{(e.stdout or b'')[-4000:]!r}")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, \
        f"perf_analyzer exited {proc.returncode}: {' '.join(cmd)}\n{output[-6000:]}"
    bad = re.search(r"(?im)^.*(\berror\b|\bfailed\b).*$", output)
    assert bad is None, f"perf_analyzer reported: {bad.group(0)!r}\n{output[-6000:]}"
    found = re.findall(r"Concurrency: (\d+), throughput: ([0-9.]+) infer/sec", output)
    return output, {int(c): float(t) for c, t in found}


def test_perf_analyzer_grpc_digits(server):
    output, tput = run(server, "digits", ["--concurrency-range", "1:2"])
    assert sorted(tput) == [1, 2] and all(t > 0 for t in tput.values()), output[-6000:]
    # Server-side statistics came from ModelStatistics.
    counts = [int(n) for n in re.findall(r"Successful request count: (\d+)", output)]
    assert len(counts) == 2 and all(n > 0 for n in counts), output[-6000:]


def test_perf_analyzer_grpc_streaming(server):
    output, tput = run(server, "digits", ["--streaming", "--concurrency-range", "2"])
    assert list(tput) == [2] and tput[2] > 0, output[-6000:]


def test_perf_analyzer_grpc_lenet_random(server):
    output, tput = run(server, "lenet", ["--concurrency-range", "1",
                                         "--input-data", "random"])
    assert list(tput) == [1] and tput[1] > 0, output[-6000:]
