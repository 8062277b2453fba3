"""Soak and overload run of `scoria serve` (README "Soak and overload").

For each load level (a multiple of the saturating concurrency), runs a mixed load for a given
time against a real `scoria serve` on 127.0.0.1 with the sample models, and reports:
- admitted requests' p50/p99 latency and refusals' (503) p99 (all, and without the 600 KB
  requests whose refusal time is mostly the client sending the body), counts by status;
- the server's RSS, open descriptors and threads over time, and RSS growth after warm-up.

The mix, per client thread (keep-alive connections): digits in binary v2, lenet in JSON v2,
600 KB JSON requests to resnet, Azure-ML `/score` through digits' hook, 5 % malformed
requests (400 expected), and clients that disconnect mid-request; plus a repository reload
of digits every 30 s. Every loop is bounded by the run's duration.
"""
import argparse
import http.client
import json
import os
import random
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DIGIT_ZERO = [0, 0, 5, 13, 9, 1, 0, 0, 0, 0, 13, 15, 10, 15, 5, 0, 0, 3, 15, 2, 0, 11, 8, 0,
              0, 4, 12, 0, 0, 8, 8, 0, 0, 5, 8, 0, 0, 9, 8, 0, 0, 4, 11, 0, 1, 12, 7, 0, 0, 2,
              14, 5, 10, 12, 0, 0, 0, 0, 6, 13, 10, 0, 0, 0]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values, q):
    if not values:
        return float("nan")
    values = sorted(values)
    k = min(len(values) - 1, max(0, round(q / 100 * (len(values) - 1))))
    return values[k]


class Requests:
    """The request bodies of the mix, built once."""

    def __init__(self):
        header = json.dumps({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32",
                                         "parameters": {"binary_data_size": 256}}]}).encode()
        self.digits_binary = (header + struct.pack("<64f", *DIGIT_ZERO),
                              {"Inference-Header-Content-Length": str(len(header))})
        image = [[[((r * 28 + c) % 17) / 17.0 for c in range(28)] for r in range(28)]]
        self.lenet_json = json.dumps({"inputs": [{"name": "input", "shape": [1, 1, 28, 28],
                                                  "datatype": "FP32", "data": [image]}]}).encode()
        pixels = [round(((i * 7) % 255) / 255.0, 4) for i in range(3 * 224 * 224)]
        self.resnet_json = json.dumps({"inputs": [{"name": "input", "shape": [1, 3, 224, 224],
                                                   "datatype": "FP32", "data": pixels}]}).encode()
        self.score = json.dumps({"data": [DIGIT_ZERO]}).encode()
        self.malformed = [b"{", b"[1, 2]", json.dumps({"inputs": [{"name": "input", "shape": [1, 3],
                                                                  "datatype": "FP32",
                                                                  "data": [1, 2, 3]}]}).encode(),
                          json.dumps({"inputs": "nope"}).encode()]


class Server:
    def __init__(self, binary, repo, extra):
        self.port = free_port()
        self.log = tempfile.NamedTemporaryFile(prefix="scoria-soak-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(
            [binary, "serve", "--models", str(repo), "--http", f"127.0.0.1:{self.port}", *extra],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                sys.exit(f"soak: scoria serve exited with {self.proc.returncode}; log {self.log.name}")
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                c.request("GET", "/v2/health/ready")
                if c.getresponse().status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        sys.exit("soak: scoria serve did not become ready in 120 s")

    def sample(self):
        pid = self.proc.pid
        rss = threads = 0
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) * 1024
                elif line.startswith("Threads:"):
                    threads = int(line.split()[1])
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        return rss, fds, threads

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def client(port, reqs, stop_at, results, seed):
    rnd = random.Random(seed)
    conn = None
    while time.monotonic() < stop_at:
        kind = rnd.choices(["digits", "lenet", "resnet", "score", "malformed", "disconnect"],
                           weights=[50, 15, 10, 15, 5, 5])[0]
        if kind == "disconnect":
            # Headers and part of a body, then gone: the server must shrug it off.
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=5)
                body = reqs.resnet_json
                s.sendall(b"POST /v2/models/resnet/infer HTTP/1.1\r\nHost: x\r\n"
                          b"Content-Length: %d\r\n\r\n" % len(body) + body[: len(body) // 3])
                s.close()
            except OSError:
                pass
            results.append((kind, 0, 0.0))
            continue
        path, body, headers = {
            "digits": ("/v2/models/digits/infer",) + reqs.digits_binary,
            "lenet": ("/v2/models/lenet/infer", reqs.lenet_json, {}),
            "resnet": ("/v2/models/resnet/infer", reqs.resnet_json, {}),
            "score": ("/models/digits/score", reqs.score, {}),
            "malformed": ("/v2/models/digits/infer", rnd.choice(reqs.malformed), {}),
        }[kind]
        started = time.monotonic()
        try:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            conn.request("POST", path, body=body, headers=headers)
            resp = conn.getresponse()
            resp.read()
            status = resp.status
            if resp.getheader("connection", "").lower() == "close":
                conn.close()
                conn = None
        except (OSError, http.client.HTTPException):
            status = -1
            if conn is not None:
                conn.close()
            conn = None
        results.append((kind, status, time.monotonic() - started))


def reloader(port, stop_at, every, counts):
    next_at = time.monotonic() + every
    while time.monotonic() < stop_at:
        time.sleep(0.2)
        if time.monotonic() < next_at:
            continue
        next_at += every
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            c.request("POST", "/v2/repository/models/digits/load", body=b"{}")
            counts.append(c.getresponse().status)
        except OSError:
            counts.append(-1)


def run_level(args, repo, reqs, level):
    server = Server(args.scoria, repo, args.server_args)
    clients = args.saturation * level
    stop_at = time.monotonic() + args.seconds
    results, reloads, samples = [], [], []
    threads = [threading.Thread(target=client, args=(server.port, reqs, stop_at, results, i))
               for i in range(clients)]
    threads.append(threading.Thread(target=reloader, args=(server.port, stop_at, 30, reloads)))
    started = time.monotonic()
    for t in threads:
        t.start()
    while time.monotonic() < stop_at:
        samples.append((time.monotonic() - started, *server.sample()))
        time.sleep(1)
    for t in threads:
        t.join()
    alive = server.proc.poll() is None
    server.stop()
    return summarize(level, clients, results, reloads, samples, alive, args.seconds)


def summarize(level, clients, results, reloads, samples, alive, seconds):
    by_status = {}
    for kind, status, _ in results:
        if kind != "disconnect":
            by_status[status] = by_status.get(status, 0) + 1
    admitted = [t for k, s, t in results if k not in ("disconnect", "malformed") and s == 200]
    refused = [t for k, s, t in results if s == 503]
    # A refused 600 KB request's time is mostly the client sending its body.
    refused_small = [t for k, s, t in results if s == 503 and k != "resnet"]
    wrong_malformed = sum(1 for k, s, _ in results if k == "malformed" and s not in (400, 503))
    warm = [s for s in samples if s[0] >= seconds * 0.2] or samples
    rss_warm, rss_end = warm[0][1], samples[-1][1]
    return {
        "level": level, "clients": clients, "alive": alive,
        "requests": sum(by_status.values()), "per_second": sum(by_status.values()) / seconds,
        "by_status": dict(sorted(by_status.items())),
        "admitted_p50_ms": percentile(admitted, 50) * 1e3,
        "admitted_p99_ms": percentile(admitted, 99) * 1e3,
        "refused_p99_ms": percentile(refused, 99) * 1e3 if refused else None,
        "refused_small_p99_ms": percentile(refused_small, 99) * 1e3 if refused_small else None,
        "malformed_not_400": wrong_malformed,
        "disconnects": sum(1 for k, _, _ in results if k == "disconnect"),
        "reloads": reloads,
        "rss_mib": {"start": samples[0][1] / 2**20, "after_warmup": rss_warm / 2**20,
                    "end": rss_end / 2**20, "max": max(s[1] for s in samples) / 2**20},
        "rss_growth_after_warmup_pct": (rss_end - rss_warm) / rss_warm * 100,
        "fds": {"min": min(s[2] for s in samples), "max": max(s[2] for s in samples),
                "end": samples[-1][2]},
        "threads": {"min": min(s[3] for s in samples), "max": max(s[3] for s in samples)},
    }


def markdown(reports, args):
    lines = [f"Soak: `{' '.join(sys.argv)}` — {args.seconds} s per level, "
             f"saturation = {args.saturation} clients, server args `{' '.join(args.server_args)}`",
             "",
             "| load | clients | req/s | admitted p50 / p99 ms | refusal p99 ms (all / small) | statuses | RSS MiB warm → end (growth) | fds min–max | threads | alive |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in reports:
        refused = "—" if r["refused_p99_ms"] is None else (
            f"{r['refused_p99_ms']:.1f} / {r['refused_small_p99_ms'] or 0:.1f}")
        statuses = ", ".join(f"{k}: {v}" for k, v in r["by_status"].items())
        lines.append(
            f"| {r['level']}× | {r['clients']} | {r['per_second']:.0f} | "
            f"{r['admitted_p50_ms']:.1f} / {r['admitted_p99_ms']:.1f} | {refused} | {statuses} | "
            f"{r['rss_mib']['after_warmup']:.0f} → {r['rss_mib']['end']:.0f} "
            f"({r['rss_growth_after_warmup_pct']:+.1f} %) | {r['fds']['min']}–{r['fds']['max']} | "
            f"{r['threads']['min']}–{r['threads']['max']} | {'yes' if r['alive'] else 'NO'} |")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scoria", default=str(REPO / "target/release/scoria"),
                   help="the scoria binary (default: target/release/scoria)")
    p.add_argument("--seconds", type=int, default=600, help="duration of each level (600)")
    p.add_argument("--levels", default="1,4",
                   help="load levels, multiples of the saturating concurrency (1,4)")
    p.add_argument("--saturation", type=int, default=4,
                   help="client threads that saturate the server (4 on 2 cores)")
    p.add_argument("--server-args", default="--max-inflight 8",
                   help="extra `scoria serve` arguments (default: --max-inflight 8)")
    p.add_argument("--json", help="also write the reports as JSON here")
    args = p.parse_args()
    args.server_args = args.server_args.split()
    if not Path(args.scoria).is_file():
        sys.exit(f"soak: {args.scoria} not found (cargo build --release)")
    reqs = Requests()
    with tempfile.TemporaryDirectory(prefix="scoria-soak-") as tmp:
        repo = Path(tmp) / "models"
        shutil.copytree(REPO / "models", repo)
        reports = []
        for level in [int(x) for x in args.levels.split(",")]:
            print(f"soak: level {level}x for {args.seconds} s", file=sys.stderr)
            reports.append(run_level(args, repo, reqs, level))
    if args.json:
        Path(args.json).write_text(json.dumps(reports, indent=2))
    print(markdown(reports, args))
    bad = [r for r in reports if not r["alive"] or r["malformed_not_400"]
           or any(s not in (200, 400, 503) for s in r["by_status"])]
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
