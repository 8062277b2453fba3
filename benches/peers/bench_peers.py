"""Peer comparison: scoria (tract, ort) against KServe's Python server and a bare-HTTP floor,
all driven by Triton's perf_analyzer over the v2 binary protocol on 127.0.0.1.

Run it through `scripts/bench-peers`, which builds what it needs and sets up the virtualenvs
first; this file uses the standard library only, so any Python 3.9+ runs it:

    python3 benches/peers/bench_peers.py --scoria target/release/scoria \
        --floor target/floor/release/floor --kserve-python .venv-peers/bin/python \
        --perf-python .venv/bin/python [--models digits,lenet,resnet] \
        [--concurrency 1,4,16] [--seconds 6] [--out benches/peers/RESULTS.md]

What it does, in order:
1. copies the chosen sample models into a temporary repository (so every server serves the
   same files and only those);
2. starts each server alone, on its own free 127.0.0.1 port, `--cold-starts` times, timing
   process start to the first `GET /v2/health/ready` 200 (the last start stays up): scoria
   with tract, scoria with ort (skipped with a note when the build has no `ort` backend or
   ONNX Runtime's library is missing), KServe (benches/peers/kserve_server.py)
   and the floor (benches/peers/floor/), whose responses are the exact bytes scoria gave to
   the same binary request;
3. per model, per concurrency, per server in turn: a short warm-up, then perf_analyzer
   (binary tensors, zero-filled batch-1 inputs via --shape, 3 windows of --seconds/3 each;
   stability is not waited for, the machine is shared); before each scoria point at
   concurrency 1, `scoria bench` in-process on the same model and engine, for the serving
   overhead;
4. peak RSS (VmHWM) of every server after the load; all servers are stopped;
5. writes the Markdown report (tables with ratios, the machine, the date) to --out and
   prints it.
Every child process is started in its own process group and killed at exit, on errors and
on Ctrl-C. A server that fails to start gets a one-line note; the others still run.
"""

import argparse
import csv
import datetime
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 120.0
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
CHILDREN = []  # every Popen we started, each the leader of its own process group


# --------------------------------------------------------------------------------------------
# processes


def log(msg):
    print(f"bench-peers: {msg}", file=sys.stderr, flush=True)


def spawn(cmd, logfile, env=None, cwd=REPO):
    """Starts `cmd` in a process group of its own (`stop` signals the group), appending its
    output to `logfile`. It stays in this run's session: with the kernel's scheduler
    autogroups (one per session, on by default) a session of its own gave each server and
    each perf_analyzer a fixed share of the CPUs, and perf_analyzer 2.51, whose 16 sending
    threads then starved its own bookkeeping, stopped making progress after its first window
    at concurrency 16 against every fast server here (digits: minutes of CPU, no result). In
    one session they finish (21-38 s for three 2 s windows)."""
    out = open(logfile, "ab")
    try:
        p = subprocess.Popen([str(c) for c in cmd], stdin=subprocess.DEVNULL, stdout=out,
                             stderr=subprocess.STDOUT, env=env, cwd=cwd, process_group=0)
    finally:
        out.close()
    CHILDREN.append(p)
    return p


def stop(p, grace_s=5.0):
    """SIGTERM to the child's process group, SIGKILL after `grace_s`."""
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            p.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait()
    else:
        # The leader is gone; make sure nothing it started is left in its group.
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    if p in CHILDREN:
        CHILDREN.remove(p)


def stop_all():
    for p in list(CHILDREN):
        stop(p, grace_s=3.0)


def on_signal(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


def rel(path):
    """A path relative to the repository where it lies inside it, for messages."""
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def tail(path, n=1500):
    try:
        return Path(path).read_text(errors="replace")[-n:]
    except OSError:
        return ""


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_status(pid, key):
    """A /proc/PID/status field in KiB (VmRSS, VmHWM), or None."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def group_kib(pid, key):
    """The field summed over the process and its descendants (KServe stays one process with
    one worker; this keeps the number right if it ever forks)."""
    total, todo, seen = 0, [pid], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        v = proc_status(p, key)
        if v:
            total += v
        try:
            for t in Path(f"/proc/{p}/task").iterdir():
                kids = (t / "children").read_text().split()
                todo.extend(int(k) for k in kids)
        except OSError:
            pass
    return total or None


# --------------------------------------------------------------------------------------------
# HTTP


def http(method, url, body=None, headers=None, timeout=10.0):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with OPENER.open(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def get_json(url):
    status, _, body = http("GET", url)
    if status != 200:
        raise RuntimeError(f"GET {url}: {status} {body[:200]!r}")
    return json.loads(body)


class NotReady(Exception):
    pass


def wait_ready(p, url, started, logfile):
    """Seconds from `started` until GET url/v2/health/ready answers 200."""
    deadline = started + READY_TIMEOUT_S
    while True:
        code = p.poll()
        if code is not None:
            last = tail(logfile, 600).strip().splitlines()
            raise NotReady(f"exited with status {code}: {last[-1] if last else 'no output'}")
        try:
            status, _, _ = http("GET", f"{url}/v2/health/ready", timeout=1.0)
            if status == 200:
                return time.monotonic() - started
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        if time.monotonic() > deadline:
            raise NotReady(f"not ready after {READY_TIMEOUT_S:.0f} s")
        time.sleep(0.005)


# --------------------------------------------------------------------------------------------
# v2 binary requests (the shape perf_analyzer sends)


DTYPE_SIZE = {"BOOL": 1, "UINT8": 1, "INT8": 1, "UINT16": 2, "INT16": 2, "FP16": 2, "BF16": 2,
              "UINT32": 4, "INT32": 4, "FP32": 4, "UINT64": 8, "INT64": 8, "FP64": 8}


def batch1_shape(shape):
    return [1 if d < 0 else d for d in shape]


def binary_request(metadata):
    """(body, header length): zero-filled batch-1 inputs, every output asked for in binary,
    as perf_analyzer builds it."""
    inputs, raw = [], b""
    for i in metadata["inputs"]:
        shape = batch1_shape(i["shape"])
        n = DTYPE_SIZE[i["datatype"]]
        for d in shape:
            n *= d
        inputs.append({"name": i["name"], "datatype": i["datatype"], "shape": shape,
                       "parameters": {"binary_data_size": n}})
        raw += bytes(n)
    outputs = [{"name": o["name"], "parameters": {"binary_data": True}}
               for o in sorted(metadata["outputs"], key=lambda o: o["name"])]
    header = json.dumps({"id": "", "inputs": inputs, "outputs": outputs},
                        separators=(",", ":")).encode()
    return header + raw, len(header)


def infer_binary(url, model, metadata):
    body, hlen = binary_request(metadata)
    return http("POST", f"{url}/v2/models/{model}/infer", body,
                {"Inference-Header-Content-Length": str(hlen),
                 "Content-Type": "application/octet-stream"})


def warm_up(url, model, metadata, seconds=1.0, max_requests=50):
    end = time.monotonic() + seconds
    for _ in range(max_requests):
        status, _, body = infer_binary(url, model, metadata)
        if status != 200:
            raise RuntimeError(f"infer {model}: {status} {body[:300]!r}")
        if time.monotonic() > end:
            break


# --------------------------------------------------------------------------------------------
# servers


class Server:
    def __init__(self, key, label, make_cmd, env=None, kind="scoria"):
        self.key, self.label, self.make_cmd, self.env, self.kind = key, label, make_cmd, env, kind
        self.proc = None
        self.url = None
        self.cold_starts = []
        self.rss_ready_kib = None
        self.peak_kib = None
        self.models = []  # models that answer
        self.notes = []
        self.error = None

    def start(self, logdir, repeats, models):
        logfile = logdir / f"{self.key}.log"
        for n in range(repeats):
            port = free_port()
            self.url = f"http://127.0.0.1:{port}"
            started = time.monotonic()
            self.proc = spawn(self.make_cmd(port), logfile, env=self.env)
            try:
                self.cold_starts.append(wait_ready(self.proc, self.url, started, logfile))
            except NotReady as e:
                stop(self.proc)
                self.proc = None
                self.error = f"{self.label} did not start: {e} (log: {rel(logfile)})"
                return False
            if n + 1 < repeats:
                stop(self.proc)
        time.sleep(0.2)
        self.rss_ready_kib = group_kib(self.proc.pid, "VmRSS")
        for m in models:
            status, _, body = http("GET", f"{self.url}/v2/models/{m}/ready")
            if status == 200:
                self.models.append(m)
            else:
                reason = body.decode(errors="replace").strip()[:300]
                self.notes.append(f"{self.label}: model {m} is not ready ({status} {reason})")
        if not self.models:
            self.error = f"{self.label} serves none of the models: " + "; ".join(self.notes)
            self.shutdown()
            return False
        return True

    def shutdown(self):
        if self.proc is not None:
            self.peak_kib = group_kib(self.proc.pid, "VmHWM")
            stop(self.proc)
            self.proc = None


def scoria_has_ort(scoria):
    """Whether this scoria build has the ort engine: `serve --help` names it, or clap accepts
    `--backend ort` (the help text does not list the possible values)."""
    try:
        out = subprocess.run([str(scoria), "serve", "--help"], capture_output=True, text=True,
                             timeout=30)
        if re.search(r"\bort\b", out.stdout):
            return True
        out = subprocess.run([str(scoria), "serve", "--backend", "ort", "--help"],
                             capture_output=True, text=True, timeout=30)
        return out.returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def ort_library():
    for var in ("ORT_DYLIB_PATH", "SCORIA_ORT_LIBRARY"):
        v = os.environ.get(var)
        if v:
            return Path(v) if Path(v).is_file() else None
    found = sorted(REPO.glob(".cache/onnxruntime/*/libonnxruntime.so"))
    return found[-1] if found else None


# --------------------------------------------------------------------------------------------
# perf_analyzer


def perf_analyzer(perf_python):
    """(binary, env) from the tritonclient wheel in perf_python's environment, with
    libcudart.so.12 (nvidia-cuda-runtime-cu12) on LD_LIBRARY_PATH."""
    probe = ("import sys, tritonclient, nvidia.cuda_runtime as c; from pathlib import Path;"
             "print(Path(sys.prefix) / 'bin' / 'perf_analyzer');"
             "print(Path(tritonclient.__file__).parent / 'bin' / 'perf_analyzer');"
             "print(Path(list(c.__path__)[0]) / 'lib')")
    out = subprocess.run([str(perf_python), "-c", probe], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit("bench-peers: perf_analyzer's environment is not set up "
                         f"({out.stderr.strip().splitlines()[-1:]}); run scripts/setup-python")
    a, b, libdir = out.stdout.split("\n")[:3]
    binary = next((Path(c) for c in (a, b) if Path(c).is_file()), None)
    if binary is None:
        raise SystemExit(f"bench-peers: perf_analyzer not found at {a} or {b}")
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        p for p in [libdir, env.get("LD_LIBRARY_PATH", "")] if p)
    return binary, env


def cpu_seconds(pid):
    """User + system CPU seconds of a process, from /proc/PID/stat, or None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 1)
    except (OSError, ValueError, IndexError):
        return None


def run_perf_analyzer(cmd, env, logfile, window_ms):
    """Runs perf_analyzer (verbose: a line per measurement pass). Returns (returncode, None),
    or (None, reason) when it had to be killed: past its time limit, or stalled, with no new
    pass for much longer than a window takes (under heavy load perf_analyzer 2.51 sometimes
    stops making progress at high concurrency, whatever the server)."""
    window_s = window_ms / 1000
    # perf_analyzer summarizes every window while its threads keep sending: at 10k+ requests/s
    # on 2 busy cores a 2 s window can take 5-10 s of wall time.
    limit = 90 + 15 * window_s
    stall = 25 + 8 * window_s
    p = spawn(cmd, logfile, env=env)
    started = last_progress = time.monotonic()
    passes = 0
    while p.poll() is None:
        time.sleep(0.25)
        now = time.monotonic()
        n = tail(logfile, 1 << 20).rsplit("--- attempt", 1)[-1].count("Pass [")
        if n != passes:
            passes, last_progress = n, now
        if now - started > limit:
            stop(p)
            return None, f"perf_analyzer ran past {limit:.0f} s"
        if now - last_progress > stall:
            cpu = cpu_seconds(p.pid)
            with open(logfile, "a") as f:
                f.write(f"--- bench-peers: stalled; perf_analyzer had used {cpu} s of CPU\n")
            stop(p)
            return None, (f"perf_analyzer made no progress for {stall:.0f} s "
                          f"after {passes} measurement pass(es)")
    stop(p)
    return p.returncode, None


def measure(pa, server, model, metadata, concurrency, window_ms, logdir, attempts=2):
    """{throughput, avg, p50, p90, p99 (ms)[, server]} from one perf_analyzer run, or
    {"error": ...}. A run that stalls is tried again once."""
    binary, env = pa
    tag = f"{server.key}-{model}-c{concurrency}"
    report = logdir / f"{tag}.csv"
    logfile = logdir / f"{tag}.log"
    shapes = []
    for i in metadata["inputs"]:
        shapes += ["--shape", f"{i['name']}:{','.join(map(str, batch1_shape(i['shape'])))}"]
    def command(window):
        return [binary, "-v", "-m", model, "-u", server.url.removeprefix("http://"), "-i", "http",
                "--concurrency-range", str(concurrency), "--input-data", "zero",
                "--measurement-interval", str(window), "--stability-percentage", "999",
                "--max-trials", "5", "-f", report, *shapes]

    retried = []
    window = window_ms
    for attempt in range(attempts):
        if attempt:
            # perf_analyzer's own bookkeeping grows with the requests of a window; at 5-10k
            # requests/s on a busy machine it can fall behind its 16 sending threads for
            # minutes. Half the window halves that pile.
            window = max(250, window // 2)
        cmd = command(window)
        report.unlink(missing_ok=True)
        with open(logfile, "a") as f:
            f.write(f"--- attempt {attempt + 1}: {' '.join(map(str, cmd))}\n")
        code, reason = run_perf_analyzer(cmd, env, logfile, window)
        if reason is None:
            break
        retried.append(reason)
        log(f"{server.label} {model} c={concurrency}: {reason}"
            + ("; trying again" if attempt + 1 < attempts else ""))
    else:
        return {"error": f"{retried[-1]}, {attempts} times (log: {rel(logfile)})"}
    output = tail(logfile, 1 << 20).rsplit("--- attempt", 1)[-1]
    if code != 0 or not report.is_file():
        last = [ln for ln in output.strip().splitlines() if ln.strip()][-1:] or ["no output"]
        return {"error": f"perf_analyzer exited {code}: {last[0][:200]} (log: {rel(logfile)})"}
    bad = re.search(r"(?im)^.*(thread \[\d+\] had error|\berror:).*$", output)
    with open(report, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return {"error": f"perf_analyzer wrote no result (log: {rel(logfile)})"}
    r = rows[0]
    # The summary's average comes after the per-pass lines, which have one each too.
    avg = re.findall(r"Avg latency: (\d+) usec \(standard deviation", output)
    result = {"throughput": float(r["Inferences/Second"]),
              "avg": int(avg[-1]) / 1000 if avg else None,
              "p50": float(r["p50 latency"]) / 1000, "p90": float(r["p90 latency"]) / 1000,
              "p99": float(r["p99 latency"]) / 1000}
    if bad:
        result["warning"] = bad.group(0).strip()[:200]
    if retried:
        result["warning"] = (f"measured on a second try with {window / 1000:g} s windows "
                             f"({retried[0]} the first time)")
    # Server-side averages (scoria's /v2/models/{m}/stats; KServe and the floor do not list
    # the statistics extension, so perf_analyzer prints no such line for them).
    srv = re.findall(r"Avg request latency: (\d+) usec \(overhead (\d+) usec \+ queue (\d+) usec "
                     r"\+ compute input (\d+) usec \+ compute infer (\d+) usec \+ compute output "
                     r"(\d+) usec\)", output)
    if srv:
        keys = ("request", "overhead", "queue", "input", "infer", "output")
        result["server"] = {k: int(v) for k, v in zip(keys, srv[-1])}
    return result


def in_process_p50(scoria, backend, repo, model, seconds, workdir):
    cmd = [str(scoria), "bench", "--models", str(repo), "--workspace", str(workdir),
           "--model", model, "--concurrency", "1", "--duration", f"{seconds}s",
           "--warmup", "1s", "--backend", backend, "--json", "--no-record"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60,
                             stdin=subprocess.DEVNULL, cwd=REPO)
    except subprocess.TimeoutExpired:
        return None, "scoria bench timed out"
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["no output"])[-1]
        return None, f"scoria bench failed: {last[:200]}"
    try:
        return float(json.loads(out.stdout)["results"]["latency_ms"]["p50"]), None
    except (ValueError, KeyError, TypeError) as e:
        return None, f"scoria bench printed no p50 ({e})"


# --------------------------------------------------------------------------------------------
# the floor


def floor_spec(scoria_url, models, dest):
    """The floor's spec from a running scoria: the GET answers and, per model, scoria's exact
    response to a perf_analyzer-like binary request."""
    dest.mkdir(parents=True, exist_ok=True)
    server = get_json(f"{scoria_url}/v2")
    # Without "statistics" perf_analyzer does not read /v2/models/{m}/stats (as with KServe,
    # which does not list it): the floor counts nothing, and perf_analyzer stops on a model
    # whose statistics show no inference.
    server["extensions"] = [e for e in server.get("extensions", []) if e != "statistics"]
    spec = {"server": server, "models": {}}
    for m in models:
        meta = get_json(f"{scoria_url}/v2/models/{m}")
        config = get_json(f"{scoria_url}/v2/models/{m}/config")
        status, headers, body = infer_binary(scoria_url, m, meta)
        if status != 200:
            raise RuntimeError(f"scoria answered {status} to a binary {m} request: {body[:200]!r}")
        lower = {k.lower(): v for k, v in headers.items()}
        (dest / f"{m}.bin").write_bytes(body)
        entry = {"metadata": meta, "config": config, "response": f"{m}.bin",
                 "content_type": lower.get("content-type", "application/octet-stream")}
        if "inference-header-content-length" in lower:
            entry["header_length"] = int(lower["inference-header-content-length"])
        spec["models"][m] = entry
    path = dest / "spec.json"
    path.write_text(json.dumps(spec, indent=1))
    return path


# --------------------------------------------------------------------------------------------
# the report


def machine():
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = Path("/proc/loadavg").read_text().split()[:3]
    except OSError:
        load = ["?"] * 3
    return {"nproc": os.cpu_count(), "cpu": cpu, "kernel": platform.release(),
            "load": " ".join(load)}


def fmt(v, digits=None):
    if v is None:
        return "–"
    if digits is None:
        digits = 0 if abs(v) >= 100 else (1 if abs(v) >= 10 else 2)
    return f"{v:,.{digits}f}"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def fmt_ratio(r):
    return "–" if r is None else f"{r:.2f}×"


def mib(kib):
    return "–" if kib is None else f"{kib / 1024:.0f} MiB"


def report(ctx):
    servers, results = ctx["servers"], ctx["results"]
    up = [s for s in servers if s.error is None]
    by_key = {s.key: s for s in servers}
    scorias = [s for s in up if s.kind == "scoria"]
    kserve = by_key.get("kserve") if by_key.get("kserve") and by_key["kserve"].error is None else None
    floor = by_key.get("floor") if by_key.get("floor") and by_key["floor"].error is None else None
    m = ctx["machine"]
    L = []
    L.append("# scoria against its peers")
    L.append("")
    L.append(f"Measured {ctx['date']} with `{ctx['command']}` on {m['cpu']}, "
             f"{m['nproc']} CPUs (`nproc`), Linux {m['kernel']}; load average before the run "
             f"{m['load']}, after {ctx['load_after']}. Everything ran on this one machine: "
             "servers and perf_analyzer share its cores.")
    L.append("")
    L.append(f"- scoria {ctx['scoria_version']} (release build); engines: "
             + ", ".join(s.label for s in scorias) + ".")
    L.append(f"- KServe: {ctx['kserve_version']} (`benches/peers/kserve_server.py`: one uvicorn "
             "worker, a synchronous `predict` over an `onnxruntime.InferenceSession`, "
             "ONNX Runtime's default threads, per-request logs off); scoria's ort engine runs "
             "models ≤ 1 MiB on one intra-op thread per session with a session per core, "
             "larger ones on ONNX Runtime's default threads.")
    L.append("- floor: `benches/peers/floor/`, axum answering each infer with the exact bytes "
             "scoria answered to the same request, no inference.")
    L.append(f"- load: perf_analyzer ({ctx['pa_version']}) over HTTP with the binary tensor "
             f"extension, zero-filled batch-1 inputs, one point = 3 windows of "
             f"{ctx['window_ms'] / 1000:g} s after a ≤1 s warm-up; latencies are "
             "perf_analyzer's client-side p50/p90/p99.")
    L.append("")
    cols = [s for s in up]
    L.append("## Throughput (inferences/s)")
    L.append("")
    head = ["model", "conc."] + [s.label for s in cols]
    ratio_cols = []
    if kserve:
        ratio_cols += [(s, "thr") for s in scorias]
    head += [f"{s.label.replace('scoria ', '')} ÷ KServe" for s, _ in ratio_cols]
    if floor:
        head += [f"{s.label.replace('scoria ', '')} ÷ floor" for s in scorias]
    L.append("| " + " | ".join(head) + " |")
    L.append("|" + "---|" * len(head))
    for model in ctx["models"]:
        for c in ctx["concurrency"]:
            row = [model, str(c)]
            for s in cols:
                r = results.get((s.key, model, c), {})
                row.append(fmt(r.get("throughput")) if "error" not in r else "failed")
            for s, _ in ratio_cols:
                row.append(fmt_ratio(ratio(results.get((s.key, model, c), {}).get("throughput"),
                                           results.get(("kserve", model, c), {}).get("throughput"))))
            if floor:
                for s in scorias:
                    row.append(fmt_ratio(ratio(
                        results.get((s.key, model, c), {}).get("throughput"),
                        results.get(("floor", model, c), {}).get("throughput"))))
            L.append("| " + " | ".join(row) + " |")
    L.append("")
    L.append("## Latency p50 / p90 / p99 (ms)")
    L.append("")
    head = ["model", "conc."] + [s.label for s in cols]
    if kserve:
        head += [f"KServe p99 ÷ {s.label.replace('scoria ', '')} p99" for s in scorias]
    L.append("| " + " | ".join(head) + " |")
    L.append("|" + "---|" * len(head))
    for model in ctx["models"]:
        for c in ctx["concurrency"]:
            row = [model, str(c)]
            for s in cols:
                r = results.get((s.key, model, c), {})
                if "p50" in r:
                    row.append(f"{fmt(r['p50'])} / {fmt(r['p90'])} / {fmt(r['p99'])}")
                else:
                    row.append("failed" if "error" in r else "–")
            if kserve:
                for s in scorias:
                    row.append(fmt_ratio(ratio(results.get(("kserve", model, c), {}).get("p99"),
                                               results.get((s.key, model, c), {}).get("p99"))))
            L.append("| " + " | ".join(row) + " |")
    L.append("")
    if floor and scorias:
        c1 = ctx["overhead_c"]
        L.append(f"## Serving overhead against the bare-HTTP floor (concurrency {c1})")
        L.append("")
        L.append("Issue 4's measure: overhead = scoria's REST p50 − `scoria bench` in-process "
                 "p50 (same model and engine, no HTTP, measured just before the REST point); "
                 "target: overhead ≤ 1.2 × the floor's p50. Cross-check from the same requests: "
                 "perf_analyzer's average client latency − scoria's average server-side request "
                 "time (HTTP, decode, encode), against the floor's average latency. Where the "
                 "in-process p50 comes out above the REST p50 the machine's noise is larger "
                 "than the overhead and the row says so.")
        L.append("")
        L.append("| model | engine | REST p50 | in-process p50 | overhead | floor p50 "
                 "| overhead ÷ floor | client avg − server avg | floor avg | ÷ floor |")
        L.append("|---|---|---|---|---|---|---|---|---|---|")
        for model in ctx["models"]:
            for s in scorias:
                r = results.get((s.key, model, c1), {})
                f = results.get(("floor", model, c1), {})
                rest, inproc, fl = r.get("p50"), ctx["in_process"].get((s.key, model)), f.get("p50")
                over = None if rest is None or inproc is None else rest - inproc
                srv = r.get("server")
                over2 = (r["avg"] - srv["request"] / 1000) if srv and r.get("avg") else None
                q = ratio(over, fl)
                qs = "noise > overhead" if over is not None and over < 0 else fmt_ratio(q)
                L.append(f"| {model} | {s.label.replace('scoria ', '')} | {fmt(rest, 3)} | "
                         f"{fmt(inproc, 3)} | {fmt(over, 3)} | {fmt(fl, 3)} | {qs} | "
                         f"{fmt(over2, 3)} | {fmt(f.get('avg'), 3)} | "
                         f"{fmt_ratio(ratio(over2, f.get('avg')))} |")
        L.append("")
        L.append("(all in ms)")
        L.append("")
    breakdown = [(s, model, c, results[(s.key, model, c)]["server"])
                 for s in scorias for model in ctx["models"] for c in ctx["concurrency"]
                 if "server" in results.get((s.key, model, c), {})]
    if breakdown:
        L.append("## Where scoria's time goes (server side, averages in µs)")
        L.append("")
        L.append("From scoria's `/v2/models/{m}/stats`, as perf_analyzer reports it: request = "
                 "from the request's arrival in the model's queue to its response; queue = "
                 "waiting for an engine instance; infer = the engine's run. Client p50 minus "
                 "the server's request time is HTTP, decoding, encoding and the client.")
        L.append("")
        L.append("| model | conc. | engine | client p50 | server request | queue | input | infer "
                 "| output |")
        L.append("|---|---|---|---|---|---|---|---|---|")
        for s, model, c, b in breakdown:
            p50 = results[(s.key, model, c)]["p50"] * 1000
            L.append(f"| {model} | {c} | {s.label.replace('scoria ', '')} | {p50:.0f} | "
                     f"{b['request']} | {b['queue']} | {b['input']} | {b['infer']} | "
                     f"{b['output']} |")
        L.append("")
    L.append("## Cold start and memory")
    L.append("")
    L.append(f"Models served: {', '.join(ctx['models'])}. Cold start: process start to the "
             f"first `GET /v2/health/ready` 200, median of {ctx['cold_starts']} start(s) "
             "(min–max). RSS at ready: VmRSS just after ready. Peak: VmHWM after all the load.")
    L.append("")
    L.append("| server | cold start to ready | RSS at ready | peak RSS |")
    L.append("|---|---|---|---|")
    for s in up:
        cs = s.cold_starts
        cold = (f"{statistics.median(cs) * 1000:.0f} ms ({min(cs) * 1000:.0f}–"
                f"{max(cs) * 1000:.0f})") if cs else "–"
        L.append(f"| {s.label} | {cold} | {mib(s.rss_ready_kib)} | {mib(s.peak_kib)} |")
    if kserve:
        L.append("")
        for s in scorias:
            if s.cold_starts and kserve.cold_starts:
                cold = ratio(statistics.median(kserve.cold_starts), statistics.median(s.cold_starts))
                L.append(f"- {s.label}: KServe's cold start ÷ scoria's = {fmt_ratio(cold)}; "
                         f"KServe's peak RSS ÷ scoria's = "
                         f"{fmt_ratio(ratio(kserve.peak_kib, s.peak_kib))}.")
    L.append("")
    L.append("## Targets (issue 4)")
    L.append("")
    small = [m for m in ctx["models"] if m in ("digits", "lenet")]
    c4 = 4 if 4 in ctx["concurrency"] else None
    if kserve and small and c4:
        for s in scorias:
            for model in small:
                a = results.get((s.key, model, c4), {})
                k = results.get(("kserve", model, c4), {})
                tr = ratio(a.get("throughput"), k.get("throughput"))
                pr = ratio(a.get("p99"), k.get("p99"))
                ok1 = "reached" if tr is not None and tr >= 8 else "not reached"
                ok2 = "reached" if pr is not None and pr <= 0.25 else "not reached"
                L.append(f"- {model}, {s.label}, concurrency 4: throughput {fmt_ratio(tr)} "
                         f"KServe's (target ≥ 8×: {ok1}); p99 {fmt_ratio(pr)} KServe's "
                         f"(target ≤ 0.25×: {ok2}).")
    else:
        L.append("- small models at concurrency 4 against KServe: not measured in this run.")
    if floor:
        c1 = ctx["overhead_c"]
        for s in scorias:
            for model in ctx["models"]:
                rest = results.get((s.key, model, c1), {}).get("p50")
                inproc = ctx["in_process"].get((s.key, model))
                fl = results.get(("floor", model, c1), {}).get("p50")
                over = None if rest is None or inproc is None else rest - inproc
                r = ratio(over, fl)
                if r is None:
                    ok = "not measured"
                elif over < 0:
                    ok = "not measurable in this run: the in-process p50 came out above the REST p50"
                else:
                    ok = "reached" if r <= 1.2 else "not reached"
                L.append(f"- {model}, {s.label}, concurrency {c1}: serving overhead "
                         f"{fmt_ratio(r) if r is None or r >= 0 else '–'} the floor's p50 "
                         f"(target ≤ 1.2×: {ok}).")
    L.append("")
    notes = list(ctx["notes"])
    for s in servers:
        if s.error:
            notes.append(s.error)
        notes.extend(s.notes)
    for (key, model, c), r in sorted(results.items(), key=lambda kv: str(kv[0])):
        if "error" in r:
            notes.append(f"{by_key[key].label}, {model}, concurrency {c}: {r['error']}")
        elif "warning" in r:
            notes.append(f"{by_key[key].label}, {model}, concurrency {c}: {r['warning']}")
    if notes:
        L.append("## Notes")
        L.append("")
        L.extend(f"- {n}" for n in notes)
        L.append("")
    L.append(f"Raw perf_analyzer output and server logs: `{ctx['logdir_rel']}`.")
    L.append("")
    return "\n".join(L)


# --------------------------------------------------------------------------------------------


def csv_list(s, kind=str):
    items = [x.strip() for x in s.split(",") if x.strip()]
    if not items:
        raise argparse.ArgumentTypeError("an empty list")
    try:
        return [kind(x) for x in items]
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def positive_int_list(s):
    v = csv_list(s, int)
    if any(x < 1 for x in v):
        raise argparse.ArgumentTypeError("concurrency must be ≥ 1")
    return v


def parse_args():
    p = argparse.ArgumentParser(prog="scripts/bench-peers",
                                description="scoria against KServe and a bare-HTTP floor, "
                                            "driven by perf_analyzer on 127.0.0.1")
    p.add_argument("--models", type=csv_list, default=["digits", "lenet", "resnet"],
                   help="sample models to measure (default digits,lenet,resnet)")
    p.add_argument("--concurrency", type=positive_int_list, default=[1, 4, 16],
                   help="perf_analyzer concurrency levels (default 1,4,16)")
    p.add_argument("--seconds", type=float, default=6.0,
                   help="measured seconds per point: 3 perf_analyzer windows (default 6)")
    p.add_argument("--cold-starts", type=int, default=3,
                   help="starts per server for the cold-start median (default 3)")
    p.add_argument("--out", type=Path, default=REPO / "benches" / "peers" / "RESULTS.md")
    p.add_argument("--no-ort", action="store_true", help="leave out scoria's ort engine")
    p.add_argument("--scoria", type=Path, default=REPO / "target" / "release" / "scoria")
    p.add_argument("--floor", type=Path,
                   default=REPO / "target" / "floor" / "release" / "floor")
    p.add_argument("--kserve-python", type=Path, default=REPO / ".venv-peers" / "bin" / "python")
    p.add_argument("--perf-python", type=Path, default=REPO / ".venv" / "bin" / "python")
    p.add_argument("--logdir", type=Path, default=None,
                   help="where logs and perf_analyzer output go "
                        "(default target/bench-peers/<timestamp>)")
    a = p.parse_args()
    if a.seconds <= 0:
        p.error("--seconds must be positive")
    if a.cold_starts < 1:
        p.error("--cold-starts must be ≥ 1")
    return a


def version_of(python, package):
    out = subprocess.run([str(python), "-c",
                          f"import importlib.metadata as m; print(m.version('{package}'))"],
                         capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else "?"


def git_rev():
    try:
        rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True).stdout
        return rev + ("+changes" if dirty.strip() else "") if rev else "?"
    except OSError:
        return "?"


def main():
    args = parse_args()
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    t0 = time.monotonic()
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    logdir = (args.logdir or REPO / "target" / "bench-peers" / stamp).resolve()
    logdir.mkdir(parents=True, exist_ok=True)
    for path, what in [(args.scoria, "scoria (cargo build --release --bin scoria)"),
                       (args.kserve_python, "the KServe virtualenv (scripts/bench-peers sets it up)"),
                       (args.perf_python, "perf_analyzer's virtualenv (scripts/setup-python)")]:
        if not path.exists():
            raise SystemExit(f"bench-peers: {path} is missing: {what}")
    for m in args.models:
        if not (REPO / "models" / m).is_dir():
            raise SystemExit(f"bench-peers: no sample model '{m}' in {REPO / 'models'}")
    pa = perf_analyzer(args.perf_python)
    ctx = {"models": args.models, "concurrency": args.concurrency, "machine": machine(),
           "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
           "command": os.environ.get("BENCH_PEERS_COMMAND")
                      or "python3 benches/peers/bench_peers.py " + " ".join(sys.argv[1:]),
           "window_ms": max(100, int(args.seconds * 1000 / 3)),
           "cold_starts": args.cold_starts, "notes": [],
           "overhead_c": 1 if 1 in args.concurrency else args.concurrency[0],
           "results": {}, "in_process": {},
           "scoria_version": git_rev(),
           "kserve_version": f"kserve {version_of(args.kserve_python, 'kserve')}, "
                             f"onnxruntime {version_of(args.kserve_python, 'onnxruntime')}",
           "pa_version": f"tritonclient {version_of(args.perf_python, 'tritonclient')}",
           "logdir_rel": os.path.relpath(logdir, REPO)}
    ctx["command"] = ctx["command"].strip()
    sys.path.insert(0, str(REPO / "benches" / "memory"))
    import bench_memory  # its symbol-order check
    stale = bench_memory.symbol_order_note(Path(args.scoria))
    if stale:
        print(f"bench-peers: {stale}", file=sys.stderr, flush=True)
        ctx["notes"].append(stale)
    tmp = Path(tempfile.mkdtemp(prefix="bench-peers-"))
    try:
        repo = tmp / "models"
        repo.mkdir()
        for m in args.models:
            shutil.copytree(REPO / "models" / m, repo / m)
        workspace = tmp / "workspace"
        workspace.mkdir()

        env = {k: v for k, v in os.environ.items() if not k.startswith("SCORIA_")}
        env["RUST_LOG"] = env.get("RUST_LOG", "warn")

        def scoria_cmd(backend):
            return lambda port: [args.scoria, "serve", "--models", repo, "--workspace", workspace,
                                 "--http", f"127.0.0.1:{port}", "--grpc", "none",
                                 "--backend", backend]

        servers = [Server("tract", "scoria tract", scoria_cmd("tract"), env=env)]
        if args.no_ort:
            ctx["notes"].append("scoria ort: left out (--no-ort).")
        elif not scoria_has_ort(args.scoria):
            ctx["notes"].append("scoria ort: skipped, this scoria build has no `ort` backend.")
        elif ort_library() is None:
            ctx["notes"].append("scoria ort: skipped, ONNX Runtime's library is missing "
                                "(run scripts/fetch-onnxruntime).")
        else:
            servers.append(Server("ort", "scoria ort", scoria_cmd("ort"), env=env))
        servers.append(Server(
            "kserve", "KServe", kind="kserve", env={**env, "PYTHONUNBUFFERED": "1"},
            make_cmd=lambda port: [args.kserve_python, REPO / "benches/peers/kserve_server.py",
                                   "--models-dir", repo, "--model", ",".join(args.models),
                                   "--port", port]))
        ctx["servers"] = servers

        for s in servers:
            log(f"starting {s.label} ({args.cold_starts}× for the cold start)")
            if not s.start(logdir, args.cold_starts, args.models):
                log(s.error)
            else:
                log(f"{s.label} ready on {s.url} in "
                    f"{statistics.median(s.cold_starts) * 1000:.0f} ms (median)")

        tract = servers[0]
        metadata = {}
        if tract.error is None:
            for m in tract.models:
                metadata[m] = get_json(f"{tract.url}/v2/models/{m}")
        if not metadata:
            raise SystemExit("bench-peers: scoria (tract) did not start, so there is nothing "
                             f"to compare: {tract.error}")

        floor = Server("floor", "floor", kind="floor", env=env, make_cmd=None)
        if not args.floor.is_file():
            floor.error = (f"floor: not built ({args.floor} is missing; "
                           "cargo build --release --manifest-path benches/peers/floor/Cargo.toml "
                           "--target-dir target/floor)")
        else:
            try:
                spec = floor_spec(tract.url, list(metadata), logdir / "floor")
                floor.make_cmd = lambda port: [args.floor, "--http", f"127.0.0.1:{port}",
                                               "--spec", spec]
                log("starting the floor")
                floor.start(logdir, 1, list(metadata))
            except (RuntimeError, OSError, ValueError) as e:
                floor.error = f"floor: could not be set up: {e}"
        if floor.error:
            log(floor.error)
        servers.append(floor)

        up = [s for s in servers if s.error is None]
        for m in metadata:
            for c in args.concurrency:
                for s in up:
                    if m not in s.models:
                        continue
                    if s.kind == "scoria" and c == ctx["overhead_c"]:
                        # The same model and engine without HTTP, just before its REST
                        # point, so that both see the same machine.
                        p50, err = in_process_p50(args.scoria, s.key, repo, m,
                                                  max(2, round(args.seconds)), workspace)
                        if err:
                            ctx["notes"].append(f"{s.label}, {m}, in-process: {err}")
                        else:
                            ctx["in_process"][(s.key, m)] = p50
                            log(f"{s.label:13} {m:7} in-process p50 {p50:8.3f} ms")
                    try:
                        warm_up(s.url, m, metadata[m])
                    except (RuntimeError, OSError) as e:
                        ctx["results"][(s.key, m, c)] = {"error": f"warm-up failed: {e}"}
                        log(f"{s.label} {m} c={c}: warm-up failed: {e}")
                        continue
                    r = measure(pa, s, m, metadata[m], c, ctx["window_ms"], logdir)
                    ctx["results"][(s.key, m, c)] = r
                    if "error" in r:
                        log(f"{s.label} {m} c={c}: {r['error']}")
                    else:
                        log(f"{s.label:13} {m:7} c={c:<3} {r['throughput']:9.1f} infer/s  "
                            f"p50 {r['p50']:8.3f}  p99 {r['p99']:8.3f} ms")
                    if s.proc is not None and s.proc.poll() is not None:
                        s.error = f"{s.label} exited during the run (log: {rel(logdir / (s.key + '.log'))})"
                        log(s.error)
                        s.proc = None
                        break
                up = [s for s in up if s.error is None]
        try:
            ctx["load_after"] = " ".join(Path("/proc/loadavg").read_text().split()[:3])
        except OSError:
            ctx["load_after"] = "?"
        for s in servers:
            s.shutdown()
        ctx["notes"].append(f"The whole run took {time.monotonic() - t0:.0f} s.")
        text = report(ctx)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        print(text)
        log(f"wrote {args.out}")
    except KeyboardInterrupt:
        log("interrupted; stopping every server")
        stop_all()
        return 130
    finally:
        stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
