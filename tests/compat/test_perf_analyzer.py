"""Triton's perf_analyzer against scoria (HTTP, binary tensor data extension).

perf_analyzer ships in the tritonclient wheel (.venv/bin/perf_analyzer). It links
libcudart.so.12 (the nvidia-cuda-runtime-cu12 wheel; no GPU is used for HTTP runs) and
Debian's libb64.so.0d (scripts/install-system-deps). Before measuring it reads
`GET /v2/models/M`, `GET /v2/models/M/config` and `GET /v2`; then it posts binary-extension
infer requests.

The sample models set no max_batch_size and have a dynamic batch dimension, so the server
auto-completes their config as Triton does (max_batch_size = --default-max-batch-size, 4 by
default, and dynamic batching): perf_analyzer takes the shapes from the config and runs on
them unmodified, without `--shape`; one run uses a copy of digits configured with
max_batch_size 8 and batches (`-b`). Runs are short (a few 500 ms windows per concurrency) and
accept any stability (`--stability-percentage 999`): the machine is shared with compiles,
so throughput varies, and the assertions are only that every request succeeded and the
throughput is positive.
"""

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

RUN_TIMEOUT_S = 120


def perf_analyzer():
    """(binary path, environment with libcudart.so.12 on LD_LIBRARY_PATH)."""
    candidates = [Path(sys.prefix) / "bin" / "perf_analyzer"]
    import tritonclient

    candidates.append(Path(tritonclient.__file__).parent / "bin" / "perf_analyzer")
    binary = next((c for c in candidates if c.is_file()), None)
    if binary is None:
        pytest.fail(f"perf_analyzer not found (looked at {[str(c) for c in candidates]}); "
                    "run scripts/setup-python")
    try:
        import nvidia.cuda_runtime as cudart_pkg
    except ImportError:
        pytest.fail("nvidia-cuda-runtime-cu12 is not installed; run scripts/setup-python")
    libdir = Path(list(cudart_pkg.__path__)[0]) / "lib"
    if not (libdir / "libcudart.so.12").is_file():
        pytest.fail(f"libcudart.so.12 not found in {libdir}")
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        p for p in [str(libdir), env.get("LD_LIBRARY_PATH", "")] if p)
    return binary, env


def run_perf_analyzer(server, tmp_path, model, args):
    binary, env = perf_analyzer()
    report = tmp_path / f"{model}.csv"
    cmd = [str(binary), "-m", model, "-u", server, "-i", "http",
           "--measurement-interval", "500", "--stability-percentage", "999",
           "--max-trials", "4", "-f", str(report), *args]
    try:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=RUN_TIMEOUT_S, env=env)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"perf_analyzer ran past {RUN_TIMEOUT_S} s: {' '.join(cmd)}\n"
                    f"{(e.stdout or b'')[-4000:]!r}")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, \
        f"perf_analyzer exited {proc.returncode}: {' '.join(cmd)}\n{output[-6000:]}"
    return output, report


def throughputs(output):
    """{concurrency: infer/sec} from the summary lines `Concurrency: N, throughput: X infer/sec`."""
    found = re.findall(r"Concurrency: (\d+), throughput: ([0-9.]+) infer/sec", output)
    return {int(c): float(t) for c, t in found}


def csv_rows(report):
    with open(report, newline="") as f:
        return list(csv.DictReader(f))


def assert_no_failures(output):
    """No request error ("Thread [0] had error: ...", "error: ...") and no failed step."""
    bad = re.search(r"(?im)^.*(\berror\b|\bfailed\b).*$", output)
    assert bad is None, f"perf_analyzer reported: {bad.group(0)!r}\n{output[-6000:]}"


def test_perf_analyzer_digits(start_server, tmp_path):
    # The server's own default: the auto-completed max_batch_size 4.
    srv = start_server(models=["digits"], args=["--default-max-batch-size", "4"])
    output, report = run_perf_analyzer(srv.addr, tmp_path, "digits", [
        "--concurrency-range", "1:2"])
    assert_no_failures(output)
    tput = throughputs(output)
    assert sorted(tput) == [1, 2], output[-6000:]
    assert all(t > 0 for t in tput.values()), tput
    rows = csv_rows(report)
    assert [int(r["Concurrency"]) for r in rows] == [1, 2], rows
    assert all(float(r["Inferences/Second"]) > 0 for r in rows), rows
    # Server-side statistics were read from /v2/models/digits/stats.
    counts = [int(n) for n in re.findall(r"Successful request count: (\d+)", output)]
    assert len(counts) == 2 and all(n > 0 for n in counts), output[-6000:]


@pytest.mark.parametrize("input_data", ["zero", "random"])
def test_perf_analyzer_lenet(server, tmp_path, input_data):
    output, report = run_perf_analyzer(server, tmp_path, "lenet", [
        "--concurrency-range", "1", "--input-data", input_data])
    assert_no_failures(output)
    tput = throughputs(output)
    assert list(tput) == [1] and tput[1] > 0, output[-6000:]
    rows = csv_rows(report)
    assert len(rows) == 1 and float(rows[0]["Inferences/Second"]) > 0, rows


def test_perf_analyzer_batched_config(start_server, tmp_path):
    """digits with `max_batch_size = 8`: the config's dims leave the batch dimension out, so
    perf_analyzer needs no --shape, and `-b 4` sends batches of 4."""
    def batched(repo):
        config = repo / "digits" / "config.toml"
        config.write_text("max_batch_size = 8\n" + config.read_text())

    srv = start_server(models=["digits"], prepare=batched)
    output, report = run_perf_analyzer(srv.addr, tmp_path, "digits", [
        "--concurrency-range", "2", "-b", "4"])
    assert_no_failures(output)
    tput = throughputs(output)
    assert list(tput) == [2] and tput[2] > 0, output[-6000:]
    inferences = [int(n) for n in re.findall(r"Inference count: (\d+)", output)]
    executions = [int(n) for n in re.findall(r"Execution count: (\d+)", output)]
    assert len(inferences) == len(executions) == 1, output[-6000:]
    # perf_analyzer reads the statistics while its 2 clients keep sending, so up to 2
    # executions may be counted whose successes are not yet: every request is 4 inferences.
    assert executions[0] > 0 and inferences[0] % 4 == 0, output[-6000:]
    assert 0 <= executions[0] - inferences[0] // 4 <= 2, output[-6000:]
