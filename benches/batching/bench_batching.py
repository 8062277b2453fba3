#!/usr/bin/env python3
"""Dynamic batching on against off, per engine, sample model and concurrency.

Runs `scoria bench` (in process: the serving core without HTTP) on two copies of the sample
repository made here: one as shipped with auto-complete turned off (`--default-max-batch-size
0`: batching off), one with `max_batch_size = 4` and `[dynamic_batching] max_queue_delay_us =
0` in each config.toml (batching on, as Triton's auto-complete sets it). Prints a Markdown
table of throughput on and off and their ratio, with p99 latencies (medians of --repeat runs).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from statistics import median
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def workspace(root: Path, batching: bool) -> Path:
    ws = root / ("on" if batching else "off")
    shutil.copytree(REPO / "models", ws / "models")
    if batching:
        for config in (ws / "models").glob("*/config.toml"):
            text = config.read_text()
            # Top-level keys go before the first table; the batcher's table at the end.
            config.write_text("max_batch_size = 4\n" + text
                              + "\n[dynamic_batching]\nmax_queue_delay_us = 0\n")
    return ws


def bench(scoria: Path, ws: Path, model: str, backend: str, concurrency: int,
          seconds: float, batching: bool) -> dict:
    cmd = [str(scoria), "--workspace", str(ws), "--log", "warn", "bench", "--model", model,
           "--backend", backend, "-c", str(concurrency), "-d", f"{seconds}s",
           "--warmup", "1s", "--json", "--no-record"]
    env = dict(os.environ, SCORIA_DEFAULT_MAX_BATCH_SIZE="4" if batching else "0")
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=seconds * 10 + 120)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {out.stderr.strip()[-400:]}")
    return json.loads(out.stdout)["results"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scoria", type=Path, default=REPO / "target" / "release" / "scoria")
    p.add_argument("--models", default="digits,lenet,resnet")
    p.add_argument("--backends", default="tract,ort")
    p.add_argument("--concurrency", default="1,4,8,16")
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--repeat", type=int, default=1,
                   help="runs of each point, off and on alternating; the table shows medians")
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="scoria-batching-") as tmp:
        wss = {b: workspace(Path(tmp), b) for b in (False, True)}
        for backend in args.backends.split(","):
            for model in args.models.split(","):
                for c in [int(c) for c in args.concurrency.split(",")]:
                    # Off and on alternate, so that the machine's drift touches both alike.
                    runs = {False: [], True: []}
                    for _ in range(args.repeat):
                        for b in (False, True):
                            runs[b].append(bench(args.scoria, wss[b], model, backend, c,
                                                 args.seconds, b))
                    off, on = (median(r["throughput"]["inferences_per_s"] for r in runs[b])
                               for b in (False, True))
                    p99 = [median(r["latency_ms"]["p99"] for r in runs[b]) for b in (False, True)]
                    row = (f"| {model} | {backend} | {c} | {off:,.0f} | {on:,.0f} | "
                           f"{on / off:.2f}× | {p99[0]:.2f} / {p99[1]:.2f} |")
                    print(row, file=sys.stderr)
                    rows.append(row)
    print("| model | engine | conc. | off (inf/s) | on (inf/s) | on ÷ off | p99 ms off / on |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
