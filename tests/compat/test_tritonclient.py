"""Compatibility of scoria's HTTP front end with the real Triton client (tritonclient[http]).

Drives a real `scoria serve` (see conftest.py) through `tritonclient.http` in JSON mode
(`binary_data=False` for every input and requested output), and compares each result with
onnxruntime running the same model file on the same inputs.

Tolerance: floating-point outputs must match onnxruntime within
`numpy.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5)`; integer and bool
outputs must match exactly, with the same dtype and shape.
"""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

RTOL = 1e-4
ATOL = 1e-5
REQUEST_ID = "req-1"

MODELS = ["digits", "lenet", "resnet", "identity_all", "add_fixed"]

ONNX_TO_TRITON = {
    onnx.TensorProto.FLOAT: "FP32",
    onnx.TensorProto.DOUBLE: "FP64",
    onnx.TensorProto.FLOAT16: "FP16",
    onnx.TensorProto.INT8: "INT8",
    onnx.TensorProto.INT16: "INT16",
    onnx.TensorProto.INT32: "INT32",
    onnx.TensorProto.INT64: "INT64",
    onnx.TensorProto.UINT8: "UINT8",
    onnx.TensorProto.UINT16: "UINT16",
    onnx.TensorProto.UINT32: "UINT32",
    onnx.TensorProto.UINT64: "UINT64",
    onnx.TensorProto.BOOL: "BOOL",
    onnx.TensorProto.STRING: "BYTES",
}

NP_TO_TRITON = {
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

IDENTITY_DTYPES = {
    "fp32": np.float32, "fp64": np.float64,
    "int8": np.int8, "int16": np.int16, "int32": np.int32, "int64": np.int64,
    "uint8": np.uint8, "uint16": np.uint16, "uint32": np.uint32, "uint64": np.uint64,
    "bool": np.bool_,
}


# --------------------------------------------------------------------------- helpers

def model_file(model_repo, model):
    return model_repo / model / "1" / "model.onnx"


def onnx_signature(path):
    """{name: (triton datatype, shape with -1 for symbolic dims)} for inputs and outputs."""
    graph = onnx.load(str(path)).graph
    initializers = {t.name for t in graph.initializer}

    def sig(values):
        out = {}
        for v in values:
            if v.name in initializers:
                continue
            t = v.type.tensor_type
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
            out[v.name] = (ONNX_TO_TRITON[t.elem_type], dims)
        return out

    return sig(graph.input), sig(graph.output)


def reference(model_repo, model, feeds, output_names):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(model_file(model_repo, model)), sess_options=opts,
                                providers=["CPUExecutionProvider"])
    return dict(zip(output_names, sess.run(output_names, feeds)))


def make_inputs(feeds):
    inputs = []
    for name, arr in feeds.items():
        inp = httpclient.InferInput(name, list(arr.shape), NP_TO_TRITON[arr.dtype])
        inp.set_data_from_numpy(arr, binary_data=False)
        inputs.append(inp)
    return inputs


def infer_and_compare(client, model_repo, model, feeds, output_names):
    """Infers through tritonclient (JSON) and checks every output against onnxruntime."""
    outputs = [httpclient.InferRequestedOutput(n, binary_data=False) for n in output_names]
    result = client.infer(model, make_inputs(feeds), outputs=outputs, request_id=REQUEST_ID)
    response = result.get_response()
    assert response.get("id") == REQUEST_ID, response.get("id")
    assert response.get("model_name") == model
    returned = [o["name"] for o in response["outputs"]]
    assert sorted(returned) == sorted(output_names), returned
    for o in response["outputs"]:
        assert "data" in o, f"output {o['name']} has no JSON data: {sorted(o)}"

    expected = reference(model_repo, model, feeds, output_names)
    for name in output_names:
        want = expected[name]
        got = result.as_numpy(name)
        assert got is not None, f"output {name} missing"
        assert got.dtype == want.dtype, f"{name}: dtype {got.dtype} != {want.dtype}"
        assert got.shape == want.shape, f"{name}: shape {got.shape} != {want.shape}"
        if np.issubdtype(want.dtype, np.floating):
            np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=name)
        else:
            np.testing.assert_array_equal(got, want, err_msg=name)
    return result


# --------------------------------------------------------------------------- server

def test_server_live(client):
    assert client.is_server_live() is True


def test_server_ready(client):
    assert client.is_server_ready() is True


def test_server_metadata(client):
    meta = client.get_server_metadata()
    assert meta["name"] == "scoria"
    assert isinstance(meta.get("version"), str) and meta["version"], meta


# --------------------------------------------------------------------------- models

@pytest.mark.parametrize("model", MODELS)
def test_model_ready(client, model):
    assert client.is_model_ready(model) is True


def test_model_metadata_digits(client):
    meta = client.get_model_metadata("digits")
    assert meta["name"] == "digits"
    assert meta["platform"] == "onnx_onnxv1"
    inputs = {i["name"]: i for i in meta["inputs"]}
    assert set(inputs) == {"input"}
    assert inputs["input"]["datatype"] == "FP32"
    assert inputs["input"]["shape"] == [-1, 64]
    outputs = {o["name"]: (o["datatype"], o["shape"]) for o in meta["outputs"]}
    assert outputs == {"probabilities": ("FP32", [-1, 10]), "label": ("INT64", [-1])}


@pytest.mark.parametrize("model", MODELS)
def test_model_metadata_matches_onnx(client, model_repo, model):
    want_in, want_out = onnx_signature(model_file(model_repo, model))
    meta = client.get_model_metadata(model)
    assert meta["name"] == model
    assert meta["platform"] == "onnx_onnxv1"
    got_in = {i["name"]: (i["datatype"], list(i["shape"])) for i in meta["inputs"]}
    got_out = {o["name"]: (o["datatype"], list(o["shape"])) for o in meta["outputs"]}
    assert got_in == {k: (d, s) for k, (d, s) in want_in.items()}
    assert got_out == {k: (d, s) for k, (d, s) in want_out.items()}


# --------------------------------------------------------------------------- inference

def digits_batch(n=8):
    from sklearn.datasets import load_digits

    data = load_digits().data
    rows = np.random.default_rng(0).choice(len(data), size=n, replace=False)
    return np.ascontiguousarray(data[rows], dtype=np.float32)


def identity_feeds():
    rng = np.random.default_rng(3)
    shape = (2, 3)
    feeds = {}
    for suffix, dt in IDENTITY_DTYPES.items():
        if dt is np.bool_:
            arr = rng.random(shape) < 0.5
            arr[0, 0], arr[0, 1] = True, False
        elif np.issubdtype(dt, np.integer):
            info = np.iinfo(dt)
            arr = rng.integers(info.min, info.max, size=shape, dtype=dt, endpoint=True)
            arr[0, 0], arr[0, 1] = info.min, info.max
        elif dt is np.float32:
            arr = (rng.standard_normal(shape) * 1000).astype(np.float32)
            arr[0, 0], arr[0, 1] = np.float32(1e-30), np.float32(-3.4e38)
        else:
            arr = rng.standard_normal(shape) * 1e6
            arr[0, 0], arr[0, 1] = 1e-300, -1.7e308
        feeds[f"x_{suffix}"] = np.ascontiguousarray(arr, dtype=dt)
    feeds["x_int64"][1, 0] = -123456789012345678
    feeds["x_uint64"][1, 0] = np.uint64(2**63 + 12345)
    feeds["x_uint64"][1, 1] = np.uint64(2**64 - 2)
    assert (feeds["x_uint64"] > np.uint64(2**63)).any()
    assert (feeds["x_int64"] < 0).any()
    return feeds


def test_infer_digits(client, model_repo):
    x = digits_batch(8)
    result = infer_and_compare(client, model_repo, "digits", {"input": x}, ["probabilities", "label"])
    probs = result.as_numpy("probabilities")
    np.testing.assert_allclose(probs.sum(axis=1), np.ones(8), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(result.as_numpy("label"), probs.argmax(axis=1))


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_infer_with_request_compression(client, model_repo, algorithm):
    """tritonclient compresses the request body (Content-Encoding gzip or deflate), binary
    tensors included; the answer equals onnxruntime's."""
    x = np.random.default_rng(3).uniform(0.0, 1.0, (2, 1, 28, 28)).astype(np.float32)
    inp = httpclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=True)
    out = httpclient.InferRequestedOutput("logits", binary_data=True)
    result = client.infer("lenet", [inp], outputs=[out],
                          request_compression_algorithm=algorithm)
    want = reference(model_repo, "lenet", {"input": x}, ["logits"])["logits"]
    np.testing.assert_allclose(result.as_numpy("logits"), want, rtol=RTOL, atol=ATOL)


def test_infer_lenet(client, model_repo):
    x = np.random.default_rng(1).uniform(0.0, 1.0, (2, 1, 28, 28)).astype(np.float32)
    infer_and_compare(client, model_repo, "lenet", {"input": x}, ["logits"])


def test_infer_resnet(client, model_repo):
    x = np.random.default_rng(2).standard_normal((1, 3, 224, 224)).astype(np.float32)
    infer_and_compare(client, model_repo, "resnet", {"input": x}, ["logits"])


def test_infer_identity_all_dtypes(client, model_repo):
    feeds = identity_feeds()
    outputs = [f"y_{s}" for s in IDENTITY_DTYPES]
    result = infer_and_compare(client, model_repo, "identity_all", feeds, outputs)
    # Identity: every value must come back as sent (floats within the stated tolerance).
    for suffix in IDENTITY_DTYPES:
        got, sent = result.as_numpy(f"y_{suffix}"), feeds[f"x_{suffix}"]
        if np.issubdtype(sent.dtype, np.floating):
            np.testing.assert_allclose(got, sent, rtol=RTOL, atol=ATOL, err_msg=suffix)
        else:
            np.testing.assert_array_equal(got, sent, err_msg=suffix)


def test_infer_add_fixed(client, model_repo):
    rng = np.random.default_rng(4)
    a = rng.standard_normal((2, 2)).astype(np.float32)
    b = rng.standard_normal((2, 2)).astype(np.float32)
    result = infer_and_compare(client, model_repo, "add_fixed", {"a": a, "b": b}, ["sum"])
    np.testing.assert_allclose(result.as_numpy("sum"), a + b, rtol=RTOL, atol=ATOL)


def test_infer_output_subset_digits(client, model_repo):
    result = infer_and_compare(client, model_repo, "digits", {"input": digits_batch(8)}, ["label"])
    assert [o["name"] for o in result.get_response()["outputs"]] == ["label"]
    assert result.as_numpy("probabilities") is None


def test_infer_output_subset_identity(client, model_repo):
    feeds = identity_feeds()
    wanted = ["y_uint64", "y_bool"]
    result = infer_and_compare(client, model_repo, "identity_all", feeds, wanted)
    assert sorted(o["name"] for o in result.get_response()["outputs"]) == sorted(wanted)
    assert result.as_numpy("y_fp32") is None


# --------------------------------------------------------------------------- errors

def test_infer_unknown_model(client):
    x = np.zeros((1, 64), dtype=np.float32)
    outputs = [httpclient.InferRequestedOutput("probabilities", binary_data=False)]
    with pytest.raises(InferenceServerException) as excinfo:
        client.infer("no_such_model", make_inputs({"input": x}), outputs=outputs,
                     request_id=REQUEST_ID)
    assert "no_such_model" in str(excinfo.value)
