#!/usr/bin/env python3
"""Memory footprint of a prebuilt scoria release binary against issue 15's targets.

What it measures (VmRSS and VmHWM from /proc/PID/status; everything on 127.0.0.1):

1. `empty`: `scoria serve` with an empty model repository, per engine (the baseline).
2. `mlp`: a large MLP generated into a temporary workspace (Gemm 2048→8192→4096→1000 with
   biases, Relu between, input "input" [N, 2048], about 218 MB of fp32 weights), served
   alone by each engine: RSS and peak at ready, then after `scoria bench --url` at
   concurrency 4 for 10 s. Target: peak ≤ 2 × weights + the empty server's RSS, at load and
   while serving. RSS is also sampled every 20 ms from process start (`--timeline-dir`
   writes the series as CSV, with the server's log lines timed from the start).
3. `samples`: the sample models as shipped (REPO/models), per engine: one server with all
   three, then one per model; RSS at ready and after a concurrency-16, 10 s bench on each
   model. Targets: ≤ 40 MiB after load, ≤ 45 MiB after the run.
4. `edge`: `scoria edge --model digits` on a private mosquitto: RSS once connected (its
   retained `scoria/status` says "online") and after a few hundred requests over MQTT
   (QoS 1, answered on `scoria/out/digits`). Target: ≤ 20 MiB.

`--mlp-external-data` stores the MLP's weights as ONNX external data instead: the load
without the weights inside the protobuf, to tell the protobuf's share of a peak from the
engine's. Model folders are copied into the temporary workspaces (the repository scan skips
symlinked folders).

It prints a Markdown table: each figure, its target and measured ÷ target (≤ 1.00 meets it).
Every process it starts is stopped on the way out (and dies with it: PR_SET_PDEATHSIG).

    .venv/bin/python benches/memory/bench_memory.py [--scoria target/release/scoria]
        [--only empty,mlp,samples,edge] [--engines tract,ort] [--timeline-dir DIR]

Needs python3 with numpy and onnx (for the MLP), /usr/sbin/mosquitto (for `edge`), and for
ort ONNX Runtime's library (default: REPO/.cache/onnxruntime/1.31.1/libonnxruntime.so).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import queue
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MIB = 1 << 20
LOOPBACK = "127.0.0.1"

# Issue 15's targets.
SAMPLES_READY_MIB = 40
SAMPLES_AFTER_MIB = 45
EDGE_MIB = 20
MLP_FACTOR = 2.0  # peak ≤ MLP_FACTOR × weights + empty server

MLP_LAYERS = [2048, 8192, 4096, 1000]
MLP_NAME = "mlp218"
SAMPLE_MODELS = ["digits", "lenet", "resnet"]

_started: list["Proc"] = []


# ---------------------------------------------------------------- processes and /proc


def status_kib(pid: int) -> dict[str, int]:
    """The kB fields of /proc/PID/status (VmRSS, VmHWM, RssAnon, RssFile, ...), and Threads."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, rest = line.partition(":")
                parts = rest.split()
                if len(parts) == 2 and parts[1] == "kB":
                    out[key] = int(parts[0])
                elif key == "Threads":
                    out[key] = int(parts[0])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return out


def _die_with_parent() -> None:
    # The child gets SIGKILL if this script dies without its finally blocks (kill -9).
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


class Sampler(threading.Thread):
    """/proc/PID/status every `interval` s from start until the process ends or stop()."""

    def __init__(self, pid: int, t0: float, interval: float = 0.02):
        super().__init__(daemon=True)
        self.pid, self.t0, self.interval = pid, t0, interval
        self.samples: list[tuple[float, int, int, int]] = []  # t, VmRSS, RssAnon, RssFile (KiB)
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            st = status_kib(self.pid)
            if not st:
                return
            self.samples.append(
                (time.monotonic() - self.t0, st.get("VmRSS", 0), st.get("RssAnon", 0),
                 st.get("RssFile", 0)))
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()


class Proc:
    """A child process with its output captured (lines timed from its start) and RSS sampled."""

    def __init__(self, label: str, argv: list[str], env: dict | None = None,
                 cwd: str | None = None, sample: bool = True):
        self.label = label
        self.t0 = time.monotonic()
        self.lines: list[tuple[float, str]] = []
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env=env, cwd=cwd, preexec_fn=_die_with_parent)
        _started.append(self)
        self.sampler = Sampler(self.proc.pid, self.t0) if sample else None
        if self.sampler:
            self.sampler.start()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.append((time.monotonic() - self.t0, raw.decode(errors="replace").rstrip()))

    def alive(self) -> bool:
        return self.proc.poll() is None

    def status(self) -> dict[str, int]:
        return status_kib(self.proc.pid)

    def log_tail(self, n: int = 15) -> str:
        return "\n".join(line for _, line in self.lines[-n:])

    def stop(self) -> None:
        if self.sampler:
            self.sampler.stop()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self in _started:
            _started.remove(self)


def stop_all() -> None:
    for p in reversed(list(_started)):
        try:
            p.stop()
        except Exception as e:  # keep stopping the others
            print(f"warning: stopping {p.label}: {e}", file=sys.stderr)


# ---------------------------------------------------------------- scoria serve / bench


def http_status(url: str, timeout: float = 1.0) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, OSError):
        return None


class Server:
    """`scoria serve` on a free loopback port, no gRPC."""

    def __init__(self, args, label: str, workspace: Path, models: Path, backend: str,
                 ready_timeout: float):
        self.port = free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        argv = [str(args.scoria), "serve", "--workspace", str(workspace), "--models", str(models),
                "--http", f"{LOOPBACK}:{self.port}", "--grpc", "none", "--backend", backend,
                "--drain-timeout", "2s", "--log", "info"]
        self.proc = Proc(label, argv, env=engine_env(args, backend), cwd=str(workspace))
        deadline = time.monotonic() + ready_timeout
        while http_status(f"{self.url}/v2/health/ready") != 200:
            if not self.proc.alive():
                raise RuntimeError(f"{label}: exited with {self.proc.proc.returncode}:\n"
                                   f"{self.proc.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{label}: not ready in {ready_timeout:.0f} s:\n"
                                   f"{self.proc.log_tail()}")
            time.sleep(0.02)
        self.ready_s = time.monotonic() - self.proc.t0
        self.at_ready = self.proc.status()

    def stop(self) -> None:
        self.proc.stop()


def engine_env(args, backend: str) -> dict:
    env = dict(os.environ)
    if backend == "ort":
        env["ORT_DYLIB_PATH"] = str(args.ort_dylib)
        env["XDG_CACHE_HOME"] = str(args.xdg_cache)
    return env


def bench(args, url: str, model: str, concurrency: int, duration: str, cwd: Path) -> dict:
    argv = [str(args.scoria), "bench", "--url", url, "--model", model, "-c", str(concurrency),
            "-d", duration, "--json", "--no-record", "--log", "warn"]
    r = subprocess.run(argv, cwd=str(cwd), capture_output=True, text=True, timeout=600,
                       preexec_fn=_die_with_parent)
    if r.returncode != 0:
        raise RuntimeError(f"bench {model} c{concurrency}: exit {r.returncode}: "
                           f"{r.stderr.strip()[-800:]}")
    try:
        return json.loads(r.stdout)
    except json.JSONDecodeError:
        return {"raw": r.stdout.strip()[-300:]}


def bench_summary(res: dict) -> str:
    """A short 'N req, X inf/s, F failed' from scoria bench's JSON, whatever its exact keys."""
    flat: dict[str, object] = {}

    def walk(prefix: str, v: object) -> None:
        if isinstance(v, dict):
            for k, x in v.items():
                walk(f"{prefix}{k}.", x)
        else:
            flat[prefix[:-1]] = v

    walk("", res)
    picks = []
    for want in ("throughput", "requests", "failed", "errors"):
        for k, v in flat.items():
            if k.split(".")[-1].startswith(want) and isinstance(v, (int, float)):
                picks.append(f"{k.split('.')[-1]}={v:.4g}" if isinstance(v, float)
                             else f"{k.split('.')[-1]}={v}")
                break
    return ", ".join(picks) or json.dumps(res)[:120]


# ---------------------------------------------------------------- the MLP


def make_mlp(path: Path, external: bool = False) -> int:
    """Writes the MLP's model.onnx to `path` (with `external`, its weights as ONNX external
    data in weights.bin next to it); returns its weight bytes (initializers)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(15)
    nodes, inits = [], []
    prev = "input"
    n_layers = len(MLP_LAYERS) - 1
    for i, (fan_in, fan_out) in enumerate(zip(MLP_LAYERS, MLP_LAYERS[1:])):
        # As torch.nn.Linear exports: weight [out, in], Gemm with transB = 1.
        w = (rng.standard_normal((fan_out, fan_in), dtype=np.float32)
             * np.float32(1.0 / np.sqrt(fan_in)))
        b = np.zeros(fan_out, dtype=np.float32)
        inits += [numpy_helper.from_array(w, f"fc{i}.weight"),
                  numpy_helper.from_array(b, f"fc{i}.bias")]
        del w
        out = "output" if i == n_layers - 1 else f"fc{i}"
        nodes.append(helper.make_node("Gemm", [prev, f"fc{i}.weight", f"fc{i}.bias"], [out],
                                      name=f"fc{i}", transB=1))
        if i < n_layers - 1:
            nodes.append(helper.make_node("Relu", [out], [f"relu{i}"], name=f"relu{i}"))
            prev = f"relu{i}"
    graph = helper.make_graph(
        nodes, "mlp218",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", MLP_LAYERS[0]])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", MLP_LAYERS[-1]])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                              producer_name="scoria benches/memory")
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    weights = sum(len(t.raw_data) for t in inits)
    if external:
        onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                  location="weights.bin", size_threshold=1024)
    else:
        onnx.save(model, str(path))
    return weights


# ---------------------------------------------------------------- MQTT (3.1.1, minimal)


def _mqtt_str(s: str) -> bytes:
    b = s.encode()
    return struct.pack("!H", len(b)) + b


def _mqtt_len(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


class Mqtt:
    """Just enough MQTT 3.1.1 for a test client: clean session, QoS 0/1 publish, subscribe."""

    def __init__(self, port: int, client_id: str):
        self.sock = socket.create_connection((LOOPBACK, port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.messages: "queue.Queue[tuple[str, bytes]]" = queue.Queue()
        self._lock = threading.Lock()
        self._next_id = 0
        body = _mqtt_str("MQTT") + bytes([4, 0x02]) + struct.pack("!H", 60) + _mqtt_str(client_id)
        self._send(0x10, body)
        kind, payload = self._read_packet()
        if kind >> 4 != 2 or payload[1] != 0:
            raise RuntimeError(f"MQTT CONNACK refused: {payload!r}")
        self.sock.settimeout(None)
        self._suback = threading.Event()
        threading.Thread(target=self._reader, daemon=True).start()

    def _send(self, first: int, body: bytes) -> None:
        with self._lock:
            self.sock.sendall(bytes([first]) + _mqtt_len(len(body)) + body)

    def _recv_exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("broker closed the connection")
            buf += chunk
        return bytes(buf)

    def _read_packet(self) -> tuple[int, bytes]:
        first = self._recv_exact(1)[0]
        n, shift = 0, 0
        while True:
            b = self._recv_exact(1)[0]
            n |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        return first, self._recv_exact(n) if n else b""

    def _packet_id(self) -> int:
        with self._lock:
            self._next_id = self._next_id % 65535 + 1
            return self._next_id

    def _reader(self) -> None:
        try:
            while True:
                first, body = self._read_packet()
                kind = first >> 4
                if kind == 3:  # PUBLISH
                    qos = (first >> 1) & 3
                    tlen = struct.unpack("!H", body[:2])[0]
                    topic = body[2:2 + tlen].decode()
                    rest = body[2 + tlen:]
                    if qos:
                        pid, rest = rest[:2], rest[2:]
                        self._send(0x40, pid)  # PUBACK
                    self.messages.put((topic, rest))
                elif kind == 9:  # SUBACK
                    self._suback.set()
        except (OSError, ConnectionError):
            return

    def subscribe(self, topic: str, qos: int = 0) -> None:
        self._suback.clear()
        self._send(0x82, struct.pack("!H", self._packet_id()) + _mqtt_str(topic) + bytes([qos]))
        if not self._suback.wait(10):
            raise RuntimeError(f"no SUBACK for {topic}")

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        head = _mqtt_str(topic) + (struct.pack("!H", self._packet_id()) if qos else b"")
        self._send(0x30 | (qos << 1), head + payload)

    def close(self) -> None:
        try:
            self._send(0xE0, b"")  # DISCONNECT
            self.sock.close()
        except OSError:
            pass


# ---------------------------------------------------------------- the measurements


class Table:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str, str, str]] = []
        self.notes: list[str] = []

    def add(self, case: str, engine: str, figure: str, value_mib: float | None,
            target_mib: float | None, unit: str = "MiB", split: dict | None = None) -> None:
        """A row; `split` (a /proc status) adds the anonymous / file-backed parts of VmRSS."""
        fmt = (lambda v: f"{v:.1f} MiB") if unit == "MiB" else (lambda v: f"{v:.2f}×")
        measured = "—" if value_mib is None else fmt(value_mib)
        if split and value_mib is not None and "RssAnon" in split:
            measured += (f" (anon {split['RssAnon'] / 1024:.1f}, "
                         f"file {split.get('RssFile', 0) / 1024:.1f})")
        target = "—" if target_mib is None else f"≤ {fmt(target_mib)}"
        if value_mib is not None and target_mib:
            r = value_mib / target_mib
            ratio = f"{r:.2f} {'ok' if r <= 1.0 else 'MISSED'}"
        else:
            ratio = "—"
        self.rows.append((case, engine, figure, measured, target, ratio))
        print(f"  {case} [{engine}] {figure}: {measured} (target {target}; {ratio})", flush=True)

    def markdown(self) -> str:
        out = ["| case | engine | figure | measured | target | measured ÷ target |",
               "| --- | --- | --- | --- | --- | --- |"]
        out += ["| " + " | ".join(r) + " |" for r in self.rows]
        return "\n".join(out)


def mib(kib: int | None) -> float | None:
    return None if kib is None else kib / 1024


def empty_workspace(root: Path, name: str) -> tuple[Path, Path]:
    ws = root / name
    (ws / "models").mkdir(parents=True)
    return ws, ws / "models"


def measure_empty(args, root: Path, table: Table, engine: str) -> float:
    ws, models = empty_workspace(root, f"empty-{engine}")
    srv = Server(args, f"empty-{engine}", ws, models, engine, 60)
    try:
        time.sleep(0.5)
        st = srv.proc.status()
        table.add("empty server", engine, "RSS at ready (+0.5 s)", mib(st.get("VmRSS")), None,
                  split=st)
        return st["VmRSS"] / 1024
    finally:
        srv.stop()


def write_timeline(args, name: str, proc: Proc, marks: dict[str, float]) -> None:
    if not args.timeline_dir or not proc.sampler:
        return
    d = Path(args.timeline_dir)
    d.mkdir(parents=True, exist_ok=True)
    with open(d / f"{name}.csv", "w") as f:
        f.write("t_s,vmrss_kib,rssanon_kib,rssfile_kib\n")
        for t, rss, anon, fil in proc.sampler.samples:
            f.write(f"{t:.3f},{rss},{anon},{fil}\n")
    with open(d / f"{name}.log", "w") as f:
        for k, t in marks.items():
            f.write(f"{t:9.3f}  [mark] {k}\n")
        for t, line in proc.lines:
            f.write(f"{t:9.3f}  {line}\n")


def timeline_summary(proc: Proc, until: float, since: float = 0.0) -> str:
    """Peak of the RSS sampled between `since` and `until` (s from start), and a dozen points."""
    s = [x for x in proc.sampler.samples if since <= x[0] <= until] if proc.sampler else []
    if not s:
        return "no samples"
    peak = max(s, key=lambda x: x[1])
    marks, next_t = [], 0.0
    for t, rss, anon, fil in s:
        if t >= next_t:
            marks.append(f"{t:.1f}s {rss / 1024:.0f}")
            next_t = t + max((until - since) / 12, 0.2)
    return (f"sampled peak {peak[1] / 1024:.0f} MiB at {peak[0]:.2f} s (anon "
            f"{peak[2] / 1024:.0f}, file {peak[3] / 1024:.0f}); RSS MiB: " + ", ".join(marks))


def measure_mlp(args, ws: Path, table: Table, engine: str, weights: int,
                empty_mib: float) -> None:
    w_mib = weights / MIB
    target = MLP_FACTOR * w_mib + empty_mib
    srv = Server(args, f"mlp-{engine}", ws, ws / "models", engine, args.ready_timeout)
    try:
        ready, at = srv.ready_s, srv.at_ready
        print(f"  mlp [{engine}] ready in {ready:.1f} s; {timeline_summary(srv.proc, ready)}",
              flush=True)
        table.add("MLP 218 MB", engine, f"RSS at ready ({ready:.1f} s)", mib(at.get("VmRSS")),
                  target, split=at)
        table.add("MLP 218 MB", engine, "peak (VmHWM) at ready", mib(at.get("VmHWM")), target)
        res = bench(args, srv.url, MLP_NAME, 4, args.mlp_duration, ws)
        after = srv.proc.status()
        t_after = time.monotonic() - srv.proc.t0
        print(f"  mlp [{engine}] bench c4: {bench_summary(res)}; serving: "
              f"{timeline_summary(srv.proc, t_after, ready)}", flush=True)
        table.add("MLP 218 MB", engine, f"RSS after c4 {args.mlp_duration}",
                  mib(after.get("VmRSS")), target, split=after)
        table.add("MLP 218 MB", engine, "peak (VmHWM) after run", mib(after.get("VmHWM")),
                  target)
        peak = after["VmHWM"] / 1024
        table.add("MLP 218 MB", engine, f"peak ÷ weights ({w_mib:.1f} MiB)", peak / w_mib, None,
                  unit="×")
        table.add("MLP 218 MB", engine, "(peak − empty server) ÷ weights",
                  (peak - empty_mib) / w_mib, MLP_FACTOR, unit="×")
        write_timeline(args, f"mlp-{engine}", srv.proc, {"ready": ready, "bench done": t_after})
    finally:
        srv.stop()


def measure_samples(args, root: Path, table: Table, engine: str) -> None:
    shipped = REPO / "models" if args.models is None else Path(args.models)
    for n in SAMPLE_MODELS:
        if not (shipped / n / "1" / "model.onnx").is_file():
            raise RuntimeError(f"no {shipped / n / '1' / 'model.onnx'} (--models)")
    groups = [("all three", SAMPLE_MODELS)] + [(m, [m]) for m in SAMPLE_MODELS]
    for label, names in groups:
        ws = root / f"samples-{engine}-{label.replace(' ', '-')}"
        (ws / "models").mkdir(parents=True)
        for n in names:
            # Copies: the repository scan skips symlinked model folders.
            shutil.copytree(shipped / n, ws / "models" / n)
        case = f"samples: {label}"
        srv = Server(args, f"{case} {engine}", ws, ws / "models", engine, 120)
        try:
            table.add(case, engine, f"RSS at ready ({srv.ready_s * 1000:.0f} ms)",
                      mib(srv.at_ready.get("VmRSS")), SAMPLES_READY_MIB, split=srv.at_ready)
            for n in names:
                res = bench(args, srv.url, n, 16, args.samples_duration, ws)
                st = srv.proc.status()
                print(f"  {case} [{engine}] bench {n} c16: {bench_summary(res)}", flush=True)
                table.add(case, engine, f"RSS after {n} c16 {args.samples_duration}",
                          mib(st.get("VmRSS")), SAMPLES_AFTER_MIB, split=st)
            # scoria returns freed memory to the system once idle for 2 s (models::idle).
            time.sleep(3)
            st = srv.proc.status()
            table.add(case, engine, "RSS idle 3 s after the runs", mib(st.get("VmRSS")),
                      SAMPLES_AFTER_MIB, split=st)
            table.add(case, engine, "peak (VmHWM) after the runs", mib(st.get("VmHWM")),
                      SAMPLES_AFTER_MIB)
        finally:
            srv.stop()


def measure_edge(args, root: Path, table: Table) -> None:
    ws, _ = empty_workspace(root, "edge")
    shipped = REPO / "models" if args.models is None else Path(args.models)
    shutil.copytree(shipped / "digits", ws / "models" / "digits")
    port = free_port()
    conf = ws / "mosquitto.conf"
    conf.write_text(f"listener {port} {LOOPBACK}\nallow_anonymous true\nset_tcp_nodelay true\n"
                    "max_queued_messages 100000\nlog_dest stderr\n")
    broker = Proc("mosquitto", [args.mosquitto, "-c", str(conf)], sample=False)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection((LOOPBACK, port), timeout=1).close()
                break
            except OSError:
                if not broker.alive() or time.monotonic() > deadline:
                    raise RuntimeError(f"mosquitto did not start:\n{broker.log_tail()}")
                time.sleep(0.05)
        client = Mqtt(port, "bench-memory-client")
        try:
            client.subscribe("scoria/status", 0)
            client.subscribe("scoria/out/digits", 0)
            module = Proc("edge", [str(args.scoria), "edge", "--workspace", str(ws),
                                   "--broker", f"mqtt://{LOOPBACK}:{port}", "--model", "digits",
                                   "--client-id", "bench-memory-edge", "--outbox",
                                   str(ws / "outbox"), "--log", "info"], cwd=str(ws))
            try:
                # Ready: connected and subscribed, which its retained status says ("online",
                # published on connect) and the first request answered confirms.
                deadline = time.monotonic() + 60
                online = None
                while online is None:
                    if not module.alive() or time.monotonic() > deadline:
                        raise RuntimeError(f"edge not online:\n{module.log_tail()}")
                    try:
                        topic, payload = client.messages.get(timeout=0.1)
                    except queue.Empty:
                        continue
                    if topic == "scoria/status":
                        doc = json.loads(payload)
                        if (doc.get("state") == "online"
                                and doc.get("client_id") == "bench-memory-edge"):
                            online = time.monotonic() - module.t0
                at_ready = module.status()
                table.add("edge digits", "tract", f"RSS once online ({online * 1000:.0f} ms)",
                          mib(at_ready.get("VmRSS")), EDGE_MIB, split=at_ready)
                # Subscribed? (a request sent before it is would be lost: a new session.)
                probe_deadline = time.monotonic() + 30
                while not edge_probe(client, timeout=1.0):
                    if not module.alive() or time.monotonic() > probe_deadline:
                        raise RuntimeError(f"edge answers no request:\n{module.log_tail()}")
                ok, failed, elapsed = edge_load(client, args.edge_requests, 32)
                after = module.status()
                print(f"  edge: {ok} results, {failed} errors in {elapsed:.1f} s", flush=True)
                if ok + failed < args.edge_requests:
                    table.notes.append(f"edge: only {ok + failed} of {args.edge_requests} "
                                       "requests answered")
                table.add("edge digits", "tract", f"RSS after {args.edge_requests} requests",
                          mib(after.get("VmRSS")), EDGE_MIB, split=after)
                table.add("edge digits", "tract", "peak (VmHWM) after the requests",
                          mib(after.get("VmHWM")), EDGE_MIB)
            finally:
                module.stop()
        finally:
            client.close()
    finally:
        broker.stop()


def edge_probe(client: Mqtt, timeout: float) -> bool:
    """Sends one request with a string id; whether its result came within `timeout`."""
    probe = f"probe-{time.monotonic_ns()}"
    client.publish("scoria/in/digits", json.dumps({"id": probe, "data": [[0.0] * 64]}).encode())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            topic, payload = client.messages.get(timeout=max(deadline - time.monotonic(), 0.01))
        except queue.Empty:
            break
        if topic == "scoria/out/digits" and json.loads(payload).get("id") == probe:
            return True
    return False


def edge_load(client: Mqtt, total: int, window: int) -> tuple[int, int, float]:
    """Sends `total` digits requests (QoS 1), at most `window` unanswered; counts results."""
    row = [float((i * 7) % 17) for i in range(64)]
    sent = ok = failed = 0
    pending: set[int] = set()
    t0 = time.monotonic()
    deadline = t0 + 120
    while (sent < total or pending) and time.monotonic() < deadline:
        while sent < total and len(pending) < window:
            client.publish("scoria/in/digits", json.dumps({"id": sent, "data": [row]}).encode())
            pending.add(sent)
            sent += 1
        try:
            topic, payload = client.messages.get(timeout=1.0)
        except queue.Empty:
            continue
        if topic != "scoria/out/digits":
            continue
        doc = json.loads(payload)
        if doc.get("id") in pending:
            pending.discard(doc["id"])
            if "result" in doc:
                ok += 1
            else:
                failed += 1
    return ok, failed, time.monotonic() - t0


# ---------------------------------------------------------------- main


# Below this share of link/symbol-order.txt's names found in the binary, the order is stale.
ORDER_COVERAGE_MIN = 0.9


def symbol_order_note(binary: Path, order: Path = REPO / "link" / "symbol-order.txt") -> str | None:
    """A warning when `binary` (an executable or object) has under ORDER_COVERAGE_MIN of the
    names in `order`, the code order file (a dependency or feature change renamed them): its
    functions then lie scattered, and the resident code measured is megabytes larger than a
    release with a fresh order. None when it has enough, or when nm cannot read it."""
    try:
        out = subprocess.run(["nm", "--defined-only", str(binary)], capture_output=True,
                             text=True, check=True).stdout
        wanted = [line.strip() for line in order.read_text().splitlines() if line.strip()]
    except (OSError, subprocess.CalledProcessError):
        return None
    # Fat LTO's copies are named NAME.N, renumbered by any code change (link/expand-order).
    copy = re.compile(r"\.[0-9]+$")
    have = {copy.sub("", f[2]) for f in (line.split() for line in out.splitlines()) if len(f) == 3}
    if not wanted or not have:
        return None
    found = sum(1 for name in wanted if copy.sub("", name) in have) / len(wanted)
    if found >= ORDER_COVERAGE_MIN:
        return None
    name = order.relative_to(REPO) if order.is_relative_to(REPO) else order
    return (f"warning: {binary} has only {found:.0%} of {name}'s names: the order is stale, so "
            "resident code (RSS) is inflated; run scripts/symbol-order and rebuild before "
            "measuring")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scoria", type=Path, default=REPO / "target" / "release" / "scoria")
    ap.add_argument("--only", default="empty,mlp,samples,edge",
                    help="comma-separated sections: empty, mlp, samples, edge")
    ap.add_argument("--engines", default="tract,ort")
    ap.add_argument("--models", default=None, help="sample repository (default REPO/models)")
    ap.add_argument("--ort-dylib", type=Path,
                    default=REPO / ".cache" / "onnxruntime" / "1.31.1" / "libonnxruntime.so")
    ap.add_argument("--xdg-cache", type=Path, default=REPO / ".cache")
    ap.add_argument("--mosquitto", default=shutil.which("mosquitto") or "/usr/sbin/mosquitto")
    ap.add_argument("--mlp-duration", default="10s")
    ap.add_argument("--samples-duration", default="10s")
    ap.add_argument("--mlp-external-data", action="store_true",
                    help="store the MLP's weights as ONNX external data (weights.bin): shows "
                         "what a load costs when the protobuf holds no weights")
    ap.add_argument("--edge-requests", type=int, default=500)
    ap.add_argument("--ready-timeout", type=float, default=600)
    ap.add_argument("--timeline-dir", default=None,
                    help="write each MLP server's 20 ms RSS samples (CSV) and timed log here")
    ap.add_argument("--keep", action="store_true", help="keep the temporary workspace")
    args = ap.parse_args()
    args.scoria = args.scoria.resolve()
    if not args.scoria.is_file():
        ap.error(f"no scoria binary at {args.scoria} (cargo build --release)")
    sections = {s.strip() for s in args.only.split(",") if s.strip()}
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    if "ort" in engines and not args.ort_dylib.is_file():
        ap.error(f"ort: no ONNX Runtime library at {args.ort_dylib} (--ort-dylib)")

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    root = Path(tempfile.mkdtemp(prefix="scoria-memory-"))
    table = Table()
    stale = symbol_order_note(args.scoria)
    if stale:
        print(stale, file=sys.stderr, flush=True)
        table.notes.append(stale)
    t_start = time.monotonic()
    try:
        empty: dict[str, float] = {}
        if sections & {"empty", "mlp"}:
            for e in engines:
                empty[e] = measure_empty(args, root, table, e)
        if "mlp" in sections:
            ws = root / "mlp"
            model_dir = ws / "models" / MLP_NAME
            weights = make_mlp(model_dir / "1" / "model.onnx", args.mlp_external_data)
            print(f"  MLP {MLP_LAYERS}: {weights:,} bytes of weights "
                  f"({weights / MIB:.1f} MiB), model.onnx "
                  f"{(model_dir / '1' / 'model.onnx').stat().st_size:,} bytes", flush=True)
            table.notes.append(f"MLP target: 2 × {weights / MIB:.1f} MiB weights + the empty "
                               "server's RSS of the same engine")
            for e in engines:
                measure_mlp(args, ws, table, e, weights, empty[e])
        if "samples" in sections:
            for e in engines:
                measure_samples(args, root, table, e)
        if "edge" in sections:
            measure_edge(args, root, table)
    finally:
        stop_all()
        if args.keep:
            print(f"workspace kept: {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)

    print()
    print(f"scoria memory, {args.scoria} ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"{os.cpu_count()} CPUs, {time.monotonic() - t_start:.0f} s); VmRSS/VmHWM from "
          "/proc/PID/status\n")
    print(table.markdown())
    for n in table.notes:
        print(f"\n- {n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
