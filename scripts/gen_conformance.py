#!/usr/bin/env python3
"""Reference outputs for scoria's engine conformance suite (tests/conformance.rs).

Run from the repository root (after scripts/setup-python):

    .venv/bin/python scripts/gen_conformance.py

For each model it writes tests/fixtures/conformance/<model>.json: the model file's sha256, the
onnxruntime version, and cases of inputs with the outputs onnxruntime-Python's
InferenceSession (CPU, default options) produces for them. Every engine is held to these.

Inputs are either literal (`"data"`) or, where a literal would be large, a `"fill"` that both
sides compute exactly: element i = float32((i * mul + add) % mod) / float32(mod) - offset,
every operation in float32 (IEEE division and subtraction are correctly rounded, so Rust and
numpy agree bit for bit). Floats are written as the exact decimal of their value, so they
read back unchanged. Deterministic: no randomness, sorted keys; regenerating gives
byte-identical files for the same models and onnxruntime.
"""

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "tests/fixtures/conformance"

DATATYPES = {
    np.dtype(np.float32): "FP32",
    np.dtype(np.float64): "FP64",
    np.dtype(np.int8): "INT8",
    np.dtype(np.int16): "INT16",
    np.dtype(np.int32): "INT32",
    np.dtype(np.int64): "INT64",
    np.dtype(np.uint8): "UINT8",
    np.dtype(np.uint16): "UINT16",
    np.dtype(np.uint32): "UINT32",
    np.dtype(np.uint64): "UINT64",
    np.dtype(np.bool_): "BOOL",
}


def model_path(name):
    sample = REPO / "models" / name / "1" / "model.onnx"
    return sample if sample.is_file() else REPO / "tests/fixtures/models" / name / "1" / "model.onnx"


def fill(shape, mul, add, mod, offset):
    """The `fill` input pattern, in float32 throughout (see the module doc)."""
    n = int(np.prod(shape))
    k = (np.arange(n, dtype=np.int64) * mul + add) % mod
    x = k.astype(np.float32) / np.float32(mod) - np.float32(offset)
    return x.astype(np.float32).reshape(shape), {"mul": mul, "add": add, "mod": mod, "offset": offset}


def datatype(a):
    if a.dtype == object:
        return "BYTES"
    return DATATYPES[a.dtype]


def flat(a):
    if a.dtype == object:
        return [str(s) for s in a.reshape(-1)]
    if a.dtype.kind == "f":
        values = [float(v) for v in a.reshape(-1)]
        bad = [v for v in values if not np.isfinite(v)]
        assert not bad, f"non-finite values cannot be stored in JSON: {bad[:3]}"
        return values
    if a.dtype == np.bool_:
        return [bool(v) for v in a.reshape(-1)]
    return [int(v) for v in a.reshape(-1)]


def tensor(name, a, pattern=None):
    t = {"name": name, "datatype": datatype(a), "shape": list(a.shape)}
    if pattern is None:
        t["data"] = flat(a)
    else:
        t["fill"] = pattern
    return t


def reference(name, cases):
    """Runs each case's inputs ({name: (array, pattern or None)}) through onnxruntime."""
    path = model_path(name)
    data = path.read_bytes()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    out_names = [o.name for o in session.get_outputs()]
    doc_cases = []
    for case_name, inputs in cases:
        feeds = {k: a for k, (a, _) in inputs.items()}
        results = session.run(out_names, feeds)
        doc_cases.append({
            "name": case_name,
            "inputs": [tensor(k, a, p) for k, (a, p) in inputs.items()],
            "outputs": [tensor(k, np.asarray(r)) for k, r in zip(out_names, results)],
        })
    return {
        "model": name,
        "model_file": str(path.relative_to(REPO)),
        "model_sha256": hashlib.sha256(data).hexdigest(),
        "reference": f"onnxruntime {ort.__version__} (Python InferenceSession, CPUExecutionProvider, default options)",
        "generator": "scripts/gen_conformance.py",
        "cases": doc_cases,
    }


def digits():
    from sklearn.datasets import load_digits

    images = load_digits().data.astype(np.float32)  # 8x8 images, pixel values 0..16
    return [
        ("one_image", {"input": (images[:1], None)}),
        ("four_images", {"input": (images[100:104], None)}),
    ]


def lenet():
    return [("batch2", {"input": fill((2, 1, 28, 28), 7919, 3, 251, 0.5)})]


def resnet():
    return [("batch1", {"input": fill((1, 3, 224, 224), 7919, 11, 1021, 0.5)})]


def identity_all():
    inputs = {}
    for suffix, dt in [("fp32", np.float32), ("fp64", np.float64), ("int8", np.int8),
                       ("int16", np.int16), ("int32", np.int32), ("int64", np.int64),
                       ("uint8", np.uint8), ("uint16", np.uint16), ("uint32", np.uint32),
                       ("uint64", np.uint64), ("bool", np.bool_)]:
        if dt is np.bool_:
            a = np.array([[True, False, True], [False, False, True]])
        elif np.issubdtype(dt, np.integer):
            info = np.iinfo(dt)
            a = np.array([[info.min, 0, info.max], [1, 2, 3]], dtype=dt)
        else:
            info = np.finfo(dt)
            a = np.array([[-1.5, 0.0, float(info.max)], [float(info.tiny), -7.0, 1e6]], dtype=dt)
        inputs[f"x_{suffix}"] = (a, None)
    return [("extremes", inputs)]


def add_fixed():
    a = np.array([[1.0, -2.5], [3.25, 1e-3]], dtype=np.float32)
    b = np.array([[10.0, 20.0], [-30.0, 0.1]], dtype=np.float32)
    return [("fixed", {"a": (a, None), "b": (b, None)})]


def identity_bytes():
    text = np.array([["hello", ""], ["gr\u00fc\u00dfe \u65e5\u672c", "a b"]], dtype=object)
    return [("unicode", {"text": (text, None)})]


MODELS = {
    "digits": digits,
    "lenet": lenet,
    "resnet": resnet,
    "identity_all": identity_all,
    "add_fixed": add_fixed,
    "identity_bytes": identity_bytes,
}


def main(argv):
    names = argv[1:] or list(MODELS)
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        sys.exit(f"unknown model(s) {unknown}; known: {', '.join(MODELS)}")
    OUT.mkdir(parents=True, exist_ok=True)
    for name in names:
        doc = reference(name, MODELS[name]())
        path = OUT / f"{name}.json"
        text = json.dumps(doc, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
        path.write_text(text, encoding="utf-8")
        print(f"{path.relative_to(REPO)}: {len(doc['cases'])} case(s), {len(text) / 1024:.1f} KiB")


if __name__ == "__main__":
    main(sys.argv)
