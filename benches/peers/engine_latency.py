"""Engine-level comparisons measured in one run, in-process (no HTTP):

1. latency: the ResNet-class sample (or --model) at concurrency 1, batch 1, through
   onnxruntime-Python's `InferenceSession`, scoria's ort engine and scoria's tract engine,
   at the same thread count (--threads; tract runs one thread per request);
2. batching: throughput at --concurrency (default 8) with and without
   `[dynamic_batching]` (preferred batch size 8), per engine, on each --batching-models.

    python3 benches/peers/engine_latency.py --scoria target/release/scoria \
        --python .venv/bin/python [--model resnet] [--threads 1] \
        [--batching-models lenet,resnet] [--seconds 6]

scoria runs are `scoria bench` in a temporary workspace holding copies of the sample models
with the config each point needs; every figure is printed with its ratio to the baseline of
the same run. Standard library only.
"""

import argparse
import json
import pathlib
import shutil
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[2]

ORT_PY = r"""
import json, sys, time
import numpy as np, onnxruntime as ort
path, threads, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
o = ort.SessionOptions()
o.intra_op_num_threads = threads
o.inter_op_num_threads = 1
s = ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])
i = s.get_inputs()[0]
shape = [1 if not isinstance(d, int) or d < 0 else d for d in i.shape]
x = np.zeros(shape, np.float32)
end = time.perf_counter() + 1.0
while time.perf_counter() < end:
    s.run(None, {i.name: x})
lat = []
end = time.perf_counter() + seconds
while time.perf_counter() < end:
    t = time.perf_counter()
    s.run(None, {i.name: x})
    lat.append(time.perf_counter() - t)
lat.sort()
print(json.dumps({"p50_ms": lat[len(lat) // 2] * 1e3, "runs": len(lat)}))
"""


def model_copy(repo: pathlib.Path, model: str, name: str, extra: str) -> None:
    """Copies sample `model` to `repo/name`, prepending `extra` to its config.toml."""
    dst = repo / name
    shutil.copytree(ROOT / "models" / model, dst)
    cfg = dst / "config.toml"
    old = cfg.read_text() if cfg.exists() else ""
    # Top-level keys must precede any [table] in the existing file.
    top, tables = [], []
    for line in extra.strip().splitlines():
        (tables if tables or line.startswith("[") else top).append(line)
    cfg.write_text("\n".join(top) + "\n" + old + "\n" + "\n".join(tables) + "\n")


def bench(scoria, ws, model, backend, concurrency, seconds):
    out = subprocess.run(
        [scoria, "bench", "--workspace", str(ws), "--model", model, "--backend", backend,
         "--concurrency", str(concurrency), "--duration", f"{seconds}s", "--warmup", "1s",
         "--json"],
        check=True, capture_output=True, text=True)
    r = json.loads(out.stdout)["results"]
    return r["latency_ms"]["p50"], r["throughput"]["inferences_per_s"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scoria", default=str(ROOT / "target/release/scoria"))
    ap.add_argument("--python", default=str(ROOT / ".venv/bin/python"))
    ap.add_argument("--model", default="resnet")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batching-models", default="lenet,resnet")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=6)
    a = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="scoria-engines-") as tmp:
        ws = pathlib.Path(tmp)
        repo = ws / "models"
        repo.mkdir()
        threads = f"[ort]\nintra_op_threads = {a.threads}\ninter_op_threads = 1"
        model_copy(repo, a.model, "lat", threads)

        print(f"## Latency, {a.model}, batch 1, concurrency 1, {a.threads} thread(s)\n")
        out = subprocess.run(
            [a.python, "-c", ORT_PY, str(ROOT / "models" / a.model / "1/model.onnx"),
             str(a.threads), str(a.seconds)], check=True, capture_output=True, text=True)
        base = json.loads(out.stdout)["p50_ms"]
        print("| runner | p50 ms | vs onnxruntime-Python |\n| --- | --- | --- |")
        print(f"| onnxruntime-Python InferenceSession | {base:.2f} | 1.00× |")
        for backend in ("ort", "tract"):
            p50, _ = bench(a.scoria, ws, "lat", backend, 1, a.seconds)
            print(f"| scoria {backend} | {p50:.2f} | {p50 / base:.2f}× |")

        print(f"\n## Dynamic batching, concurrency {a.concurrency}, preferred batch 8\n")
        print("| model | engine | off inf/s | on inf/s | on / off |\n| --- | --- | --- | --- | --- |")
        for m in filter(None, a.batching_models.split(",")):
            model_copy(repo, m, f"{m}_off", f"max_batch_size = 16\n{threads}")
            model_copy(repo, m, f"{m}_on", f"max_batch_size = 16\n{threads}\n"
                       "[dynamic_batching]\nmax_queue_delay_us = 2000\npreferred_batch_size = [8]")
            for backend in ("ort", "tract"):
                _, off = bench(a.scoria, ws, f"{m}_off", backend, a.concurrency, a.seconds)
                _, on = bench(a.scoria, ws, f"{m}_on", backend, a.concurrency, a.seconds)
                print(f"| {m} | {backend} | {off:.0f} | {on:.0f} | {on / off:.2f}× |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
