#!/usr/bin/env python3
"""Deterministic generator for scoria's sample models and test fixtures.

Run from the repository root (after scripts/setup-python):

    .venv/bin/python scripts/gen_models.py

Writes
  models/digits/1/model.onnx    MLP trained with scikit-learn on load_digits (Gemm/Relu/Gemm/Softmax + ArgMax)
  models/digits/labels.txt, models/digits/config.toml
  models/lenet/1/model.onnx     LeNet-5-size CNN, seeded He-init weights (untrained)
  models/lenet/config.toml
  models/resnet/1/model.onnx    ResNet-18-style CNN (32/64/128/256 channels), seeded weights, unfolded BN
  models/resnet/config.toml
  tests/fixtures/models/identity_all/1/model.onnx   one Identity per datatype
  tests/fixtures/models/add_fixed/1/model.onnx      a + b on fixed [2,2] inputs
  tests/fixtures/models/identity_bytes/1/model.onnx text STRING [N,2] -> Identity -> echo

`--only NAME [NAME ...]` regenerates just those models (digits, lenet, resnet, identity_all,
add_fixed, identity_bytes) and leaves every other file alone.

Every model uses standard ONNX ops only (opset 13, IR version 8), has producer_name
"scoria-gen", no timestamps, and is checked with onnx.checker and run with onnxruntime.
All randomness is seeded, so regenerating gives byte-identical files on the same machine
(BLAS is pinned to one thread so training is reproducible).
"""

import os

# One BLAS thread: scikit-learn training must be bit-reproducible between runs.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import hashlib  # noqa: E402
import sys  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
OPSET = 13
IR_VERSION = 8
PRODUCER = "scoria-gen"
PRODUCER_VERSION = "1"
BATCH = "N"

SUMMARY = []  # rows: (path, inputs, outputs, size, sha256, note)


# --------------------------------------------------------------------------- helpers

def f32(a):
    return np.ascontiguousarray(a, dtype=np.float32)


def init(name, array):
    return numpy_helper.from_array(np.ascontiguousarray(array), name=name)


def vinfo(name, elem_type, shape):
    return helper.make_tensor_value_info(name, elem_type, shape)


def make_model(graph, doc):
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name=PRODUCER,
        producer_version=PRODUCER_VERSION,
        doc_string=doc,
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def session(model_bytes):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(model_bytes, sess_options=opts, providers=["CPUExecutionProvider"])


def write_model(rel_path, model, note=""):
    data = model.SerializeToString(deterministic=True)
    path = REPO / rel_path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".onnx.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)

    def sig(vis):
        out = []
        for v in vis:
            t = v.type.tensor_type
            dims = [d.dim_param if d.HasField("dim_param") else str(d.dim_value) for d in t.shape.dim]
            out.append(f"{v.name}:{TensorProto.DataType.Name(t.elem_type)}[{','.join(dims)}]")
        return " ".join(out)

    SUMMARY.append((
        str(rel_path),
        sig(model.graph.input),
        sig(model.graph.output),
        len(data),
        hashlib.sha256(data).hexdigest()[:12],
        note,
    ))
    return data


def write_text(rel_path, text):
    path = REPO / rel_path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def toml_str(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_config(rel_path, description, tags):
    lines = [f"description = {toml_str(description)}", "", "[tags]"]
    lines += [f"{k} = {toml_str(v)}" for k, v in tags.items()]
    write_text(rel_path, "\n".join(lines) + "\n")


# --------------------------------------------------------------------------- digits

def gen_digits():
    from sklearn.datasets import load_digits
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier

    digits = load_digits()
    x = digits.data.astype(np.float64)  # raw pixel values 0..16
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.2, random_state=42, stratify=y)

    clf = MLPClassifier(hidden_layer_sizes=(64,), activation="relu", solver="adam",
                        alpha=1e-4, max_iter=400, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(x_train / 16.0, y_train)  # trained on pixels scaled to 0..1

    w1, w2 = clf.coefs_
    b1, b2 = clf.intercepts_
    # Fold the 1/16 input scaling into the first layer so the model takes raw pixels.
    w1 = w1 / 16.0

    nodes = [
        helper.make_node("Gemm", ["input", "fc1.weight", "fc1.bias"], ["fc1"], name="fc1"),
        helper.make_node("Relu", ["fc1"], ["relu1"], name="relu1"),
        helper.make_node("Gemm", ["relu1", "fc2.weight", "fc2.bias"], ["logits"], name="fc2"),
        helper.make_node("Softmax", ["logits"], ["probabilities"], name="softmax", axis=1),
        helper.make_node("ArgMax", ["logits"], ["label"], name="argmax", axis=1, keepdims=0),
    ]
    graph = helper.make_graph(
        nodes, "digits_mlp",
        [vinfo("input", TensorProto.FLOAT, [BATCH, 64])],
        [vinfo("probabilities", TensorProto.FLOAT, [BATCH, 10]),
         vinfo("label", TensorProto.INT64, [BATCH])],
        initializer=[init("fc1.weight", f32(w1)), init("fc1.bias", f32(b1)),
                     init("fc2.weight", f32(w2)), init("fc2.bias", f32(b2))],
    )
    model = make_model(graph, "8x8 handwritten digit classifier (scikit-learn MLP on load_digits); "
                              "input: 64 raw pixel values 0..16")
    data = model.SerializeToString(deterministic=True)

    # Verify with onnxruntime, not sklearn.
    sess = session(data)
    probs, label = sess.run(["probabilities", "label"], {"input": f32(x_test)})
    assert probs.shape == (len(x_test), 10) and label.shape == (len(x_test),)
    assert label.dtype == np.int64
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    acc = float((label == y_test).mean())
    sk_probs = clf.predict_proba(x_test / 16.0)
    max_diff = float(np.abs(sk_probs - probs).max())
    assert max_diff < 1e-4, f"onnx export disagrees with sklearn: {max_diff}"
    assert acc > 0.9, f"digits accuracy too low: {acc}"
    print(f"digits: held-out accuracy (onnxruntime) = {acc:.4f} on {len(y_test)} samples "
          f"(max |p_ort - p_sklearn| = {max_diff:.1e})")

    write_model("models/digits/1/model.onnx", model, f"test acc {acc:.4f}")
    write_text("models/digits/labels.txt", "".join(f"{i}\n" for i in range(10)))
    write_config(
        "models/digits/config.toml",
        "Handwritten digit classifier (8x8 images, 64 raw pixel values 0..16): "
        "a scikit-learn MLP trained on load_digits",
        {"dataset": "sklearn-digits", "accuracy": f"{acc:.4f}", "framework": "scikit-learn",
         "architecture": "mlp-64"},
    )
    return acc


# --------------------------------------------------------------------------- lenet

def he(rng, shape, fan_in):
    return f32(rng.standard_normal(shape) * np.sqrt(2.0 / fan_in))


def gen_lenet():
    rng = np.random.default_rng(5)
    inits = []

    def param(name, arr):
        inits.append(init(name, arr))
        return name

    c1w = param("conv1.weight", he(rng, (6, 1, 5, 5), 1 * 25))
    c1b = param("conv1.bias", f32(rng.uniform(-0.05, 0.05, 6)))
    c2w = param("conv2.weight", he(rng, (16, 6, 5, 5), 6 * 25))
    c2b = param("conv2.bias", f32(rng.uniform(-0.05, 0.05, 16)))
    f1w = param("fc1.weight", he(rng, (400, 120), 400))
    f1b = param("fc1.bias", f32(rng.uniform(-0.05, 0.05, 120)))
    f2w = param("fc2.weight", he(rng, (120, 84), 120))
    f2b = param("fc2.bias", f32(rng.uniform(-0.05, 0.05, 84)))
    f3w = param("fc3.weight", f32(rng.standard_normal((84, 10)) * np.sqrt(1.0 / 84)))
    f3b = param("fc3.bias", f32(np.zeros(10)))

    nodes = [
        helper.make_node("Conv", ["input", c1w, c1b], ["conv1"], name="conv1",
                         kernel_shape=[5, 5], pads=[2, 2, 2, 2], strides=[1, 1]),
        helper.make_node("Relu", ["conv1"], ["relu1"], name="relu1"),
        helper.make_node("MaxPool", ["relu1"], ["pool1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["pool1", c2w, c2b], ["conv2"], name="conv2",
                         kernel_shape=[5, 5], strides=[1, 1]),
        helper.make_node("Relu", ["conv2"], ["relu2"], name="relu2"),
        helper.make_node("MaxPool", ["relu2"], ["pool2"], name="pool2", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["pool2"], ["flat"], name="flatten", axis=1),
        helper.make_node("Gemm", ["flat", f1w, f1b], ["fc1"], name="fc1"),
        helper.make_node("Relu", ["fc1"], ["relu3"], name="relu3"),
        helper.make_node("Gemm", ["relu3", f2w, f2b], ["fc2"], name="fc2"),
        helper.make_node("Relu", ["fc2"], ["relu4"], name="relu4"),
        helper.make_node("Gemm", ["relu4", f3w, f3b], ["logits"], name="fc3"),
    ]
    graph = helper.make_graph(
        nodes, "lenet5",
        [vinfo("input", TensorProto.FLOAT, [BATCH, 1, 28, 28])],
        [vinfo("logits", TensorProto.FLOAT, [BATCH, 10])],
        initializer=inits,
    )
    model = make_model(graph, "LeNet-5-size CNN for 28x28 grayscale images; seeded He-init weights (untrained)")
    data = model.SerializeToString(deterministic=True)

    x = f32(np.random.default_rng(1).uniform(0.0, 1.0, (4, 1, 28, 28)))
    (logits,) = session(data).run(["logits"], {"input": x})
    assert logits.shape == (4, 10) and np.isfinite(logits).all()
    std = float(logits.std())
    print(f"lenet: logits std on uniform[0,1) input = {std:.3f}")
    write_model("models/lenet/1/model.onnx", model, f"logits std {std:.2f}")
    write_config(
        "models/lenet/config.toml",
        "LeNet-5-size CNN (1x28x28 grayscale in, 10 logits out) with seeded random weights; "
        "a compute-shape sample, not a trained classifier",
        {"architecture": "lenet-5", "weights": "seeded-random"},
    )


# --------------------------------------------------------------------------- resnet

class ResNetBuilder:
    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.nodes = []
        self.inits = []

    def param(self, name, arr):
        self.inits.append(init(name, arr))
        return name

    def conv(self, name, x, cin, cout, k, stride, pad):
        w = self.param(f"{name}.weight", he(self.rng, (cout, cin, k, k), cin * k * k))
        self.nodes.append(helper.make_node(
            "Conv", [x, w], [name], name=name,
            kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4))
        return name

    def bn(self, name, x, c, gamma_range=(0.8, 1.2)):
        rng = self.rng
        scale = self.param(f"{name}.weight", f32(rng.uniform(*gamma_range, c)))
        bias = self.param(f"{name}.bias", f32(rng.uniform(-0.1, 0.1, c)))
        mean = self.param(f"{name}.running_mean", f32(rng.uniform(-0.1, 0.1, c)))
        var = self.param(f"{name}.running_var", f32(rng.uniform(0.8, 1.25, c)))
        self.nodes.append(helper.make_node(
            "BatchNormalization", [x, scale, bias, mean, var], [name], name=name,
            epsilon=1e-5))
        return name

    def relu(self, name, x):
        self.nodes.append(helper.make_node("Relu", [x], [name], name=name))
        return name

    def block(self, name, x, cin, cout, stride):
        y = self.conv(f"{name}.conv1", x, cin, cout, 3, stride, 1)
        y = self.bn(f"{name}.bn1", y, cout)
        y = self.relu(f"{name}.relu1", y)
        y = self.conv(f"{name}.conv2", y, cout, cout, 3, 1, 1)
        # Smaller gamma on the last BN of a branch keeps the residual sum's variance bounded.
        y = self.bn(f"{name}.bn2", y, cout, gamma_range=(0.3, 0.5))
        if stride != 1 or cin != cout:
            sc = self.conv(f"{name}.downsample.conv", x, cin, cout, 1, stride, 0)
            sc = self.bn(f"{name}.downsample.bn", sc, cout)
        else:
            sc = x
        self.nodes.append(helper.make_node("Add", [y, sc], [f"{name}.add"], name=f"{name}.add"))
        return self.relu(f"{name}.relu2", f"{name}.add")


def gen_resnet():
    b = ResNetBuilder(seed=18)
    x = b.conv("stem.conv", "input", 3, 32, 7, 2, 3)
    x = b.bn("stem.bn", x, 32)
    x = b.relu("stem.relu", x)
    b.nodes.append(helper.make_node("MaxPool", [x], ["stem.pool"], name="stem.pool",
                                    kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]))
    x = "stem.pool"
    cin = 32
    for stage, cout in enumerate([32, 64, 128, 256], start=1):
        for blk in range(2):
            stride = 2 if (stage > 1 and blk == 0) else 1
            x = b.block(f"layer{stage}.{blk}", x, cin, cout, stride)
            cin = cout
    b.nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"], name="gap"))
    b.nodes.append(helper.make_node("Flatten", ["gap"], ["flat"], name="flatten", axis=1))
    # 0.25: the residual stages leave features with RMS ~4; keep logits at std ~1.
    fcw = b.param("fc.weight", f32(b.rng.standard_normal((cin, 1000)) * 0.25 * np.sqrt(1.0 / cin)))
    fcb = b.param("fc.bias", f32(b.rng.uniform(-0.05, 0.05, 1000)))
    b.nodes.append(helper.make_node("Gemm", ["flat", fcw, fcb], ["logits"], name="fc"))

    graph = helper.make_graph(
        b.nodes, "resnet_mini",
        [vinfo("input", TensorProto.FLOAT, [BATCH, 3, 224, 224])],
        [vinfo("logits", TensorProto.FLOAT, [BATCH, 1000])],
        initializer=b.inits,
    )
    model = make_model(graph, "ResNet-18-style CNN (basic blocks, 32/64/128/256 channels) for 3x224x224 "
                              "images, 1000 logits; seeded random weights with unfolded BatchNormalization")
    data = model.SerializeToString(deterministic=True)
    params = sum(int(np.prod(t.dims)) for t in b.inits)

    x_in = f32(np.random.default_rng(2).standard_normal((2, 3, 224, 224)))
    (logits,) = session(data).run(["logits"], {"input": x_in})
    assert logits.shape == (2, 1000) and np.isfinite(logits).all()
    std = float(logits.std())
    per_sample_diff = float(np.abs(logits[0] - logits[1]).mean())
    assert 0.1 < std < 10.0, f"resnet logits std out of range: {std}"
    assert per_sample_diff > 1e-3, "resnet output does not depend on its input"
    size_mb = len(data) / 1e6
    assert 5.0 <= size_mb <= 15.0, f"resnet size {size_mb:.2f} MB outside 5..15 MB"
    print(f"resnet: {params} parameters, {size_mb:.2f} MB, logits std on N(0,1) input = {std:.3f}, "
          f"mean |logits[0]-logits[1]| = {per_sample_diff:.3f}")
    write_model("models/resnet/1/model.onnx", model, f"{params / 1e6:.2f}M params, logits std {std:.2f}")
    write_config(
        "models/resnet/config.toml",
        "ResNet-18-style CNN (3x224x224 in, 1000 logits out; basic residual blocks, 32/64/128/256 "
        "channels, unfolded BatchNormalization) with seeded random weights; a compute-shape sample",
        {"architecture": "resnet-basic-2222", "weights": "seeded-random"},
    )


# --------------------------------------------------------------------------- fixtures

IDENTITY_TYPES = [
    ("fp32", TensorProto.FLOAT, np.float32),
    ("fp64", TensorProto.DOUBLE, np.float64),
    ("int8", TensorProto.INT8, np.int8),
    ("int16", TensorProto.INT16, np.int16),
    ("int32", TensorProto.INT32, np.int32),
    ("int64", TensorProto.INT64, np.int64),
    ("uint8", TensorProto.UINT8, np.uint8),
    ("uint16", TensorProto.UINT16, np.uint16),
    ("uint32", TensorProto.UINT32, np.uint32),
    ("uint64", TensorProto.UINT64, np.uint64),
    ("bool", TensorProto.BOOL, np.bool_),
]


def gen_identity_all():
    nodes, inputs, outputs = [], [], []
    for suffix, elem, _ in IDENTITY_TYPES:
        nodes.append(helper.make_node("Identity", [f"x_{suffix}"], [f"y_{suffix}"], name=f"id_{suffix}"))
        inputs.append(vinfo(f"x_{suffix}", elem, [BATCH, 3]))
        outputs.append(vinfo(f"y_{suffix}", elem, [BATCH, 3]))
    graph = helper.make_graph(nodes, "identity_all", inputs, outputs)
    model = make_model(graph, "Test fixture: each input x_<type> passed through Identity to y_<type>")
    data = model.SerializeToString(deterministic=True)

    feeds = {}
    for suffix, _, dt in IDENTITY_TYPES:
        if dt is np.bool_:
            feeds[f"x_{suffix}"] = np.array([[True, False, True], [False, False, True]])
        elif np.issubdtype(dt, np.integer):
            info = np.iinfo(dt)
            feeds[f"x_{suffix}"] = np.array([[info.min, 0, info.max], [1, 2, 3]], dtype=dt)
        else:
            feeds[f"x_{suffix}"] = np.array([[-1.5, 0.0, 3.25], [1e-3, -7.0, 1e6]], dtype=dt)
    names = [f"y_{s}" for s, _, _ in IDENTITY_TYPES]
    results = session(data).run(names, feeds)
    for (suffix, _, dt), res in zip(IDENTITY_TYPES, results):
        assert res.dtype == np.dtype(dt), (suffix, res.dtype)
        np.testing.assert_array_equal(res, feeds[f"x_{suffix}"])
    write_model("tests/fixtures/models/identity_all/1/model.onnx", model, f"{len(IDENTITY_TYPES)} dtypes")


def gen_add_fixed():
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["sum"], name="add")],
        "add_fixed",
        [vinfo("a", TensorProto.FLOAT, [2, 2]), vinfo("b", TensorProto.FLOAT, [2, 2])],
        [vinfo("sum", TensorProto.FLOAT, [2, 2])],
    )
    model = make_model(graph, "Test fixture: sum = a + b on fixed-shape [2,2] FP32 inputs")
    data = model.SerializeToString(deterministic=True)
    a = f32([[1, 2], [3, 4]])
    b = f32([[10, 20], [30, 40]])
    (s,) = session(data).run(["sum"], {"a": a, "b": b})
    np.testing.assert_array_equal(s, a + b)
    write_model("tests/fixtures/models/add_fixed/1/model.onnx", model, "fixed shape")


def gen_identity_bytes():
    graph = helper.make_graph(
        [helper.make_node("Identity", ["text"], ["echo"], name="id_text")],
        "identity_bytes",
        [vinfo("text", TensorProto.STRING, [BATCH, 2])],
        [vinfo("echo", TensorProto.STRING, [BATCH, 2])],
    )
    model = make_model(graph, "Test fixture: STRING input text [N,2] passed through Identity to echo")
    data = model.SerializeToString(deterministic=True)
    text = np.array([["hello", ""], ["gr\u00fc\u00dfe \u65e5\u672c", "a b"]], dtype=object)
    (echo,) = session(data).run(["echo"], {"text": text})
    assert echo.shape == text.shape, echo.shape
    assert echo.tolist() == text.tolist(), echo.tolist()
    write_model("tests/fixtures/models/identity_bytes/1/model.onnx", model, "STRING identity")


# --------------------------------------------------------------------------- main

GENERATORS = {
    "digits": gen_digits,
    "lenet": gen_lenet,
    "resnet": gen_resnet,
    "identity_all": gen_identity_all,
    "add_fixed": gen_add_fixed,
    "identity_bytes": gen_identity_bytes,
}


def main(argv):
    import argparse

    parser = argparse.ArgumentParser(description="Generate scoria's sample models and test fixtures.")
    parser.add_argument("--only", nargs="+", choices=sorted(GENERATORS), metavar="NAME",
                        help=f"generate only these ({', '.join(GENERATORS)}); default: all")
    args = parser.parse_args(argv)
    print(f"gen_models: onnx {onnx.__version__}, onnxruntime {ort.__version__}, numpy {np.__version__}")
    for name, gen in GENERATORS.items():
        if args.only is None or name in args.only:
            gen()

    print()
    header = ("model", "size", "sha256", "note")
    rows = [(p, f"{s / 1e6:.2f} MB" if s >= 1e5 else f"{s / 1e3:.1f} kB", h, n)
            for p, _, _, s, h, n in SUMMARY]
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(4)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    print(fmt.format(*header))
    print(fmt.format(*("-" * w for w in widths)))
    for r in rows:
        print(fmt.format(*r))
    print()
    for p, ins, outs, _, _, _ in SUMMARY:
        if "identity_all" in p:
            ins, outs = "x_fp32..x_bool [N,3]", "y_fp32..y_bool [N,3]"
        print(f"{p}\n    in:  {ins}\n    out: {outs}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
