"""tritonclient in binary mode: the binary tensor data extension, BYTES, config and statistics.

Drives the session's `scoria serve` (see conftest.py) through `tritonclient.http` with
`binary_data=True` inputs and outputs (and mixes of binary and JSON), and compares each
result with onnxruntime on the same model file, with the tolerance of the JSON-mode tests
(test_tritonclient.py): floats within rtol 1e-4 / atol 1e-5, integers and bools exact,
with the same dtype and shape.
"""

import numpy as np
import pytest
import tritonclient.http as httpclient

from test_tritonclient import (
    ATOL,
    IDENTITY_DTYPES,
    NP_TO_TRITON,
    RTOL,
    digits_batch,
    identity_feeds,
    reference,
)

REQUEST_ID = "bin-1"


# --------------------------------------------------------------------------- helpers

def make_inputs(feeds, binary):
    """InferInputs for `feeds`; `binary(name)` says whether that input goes as binary data."""
    inputs = []
    for name, arr in feeds.items():
        inp = httpclient.InferInput(name, list(arr.shape), NP_TO_TRITON[arr.dtype])
        inp.set_data_from_numpy(arr, binary_data=binary(name))
        inputs.append(inp)
    return inputs


def assert_matches(got, want, name):
    assert got is not None, f"output {name} missing"
    assert got.dtype == want.dtype, f"{name}: dtype {got.dtype} != {want.dtype}"
    assert got.shape == want.shape, f"{name}: shape {got.shape} != {want.shape}"
    if np.issubdtype(want.dtype, np.floating):
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=name)
    else:
        np.testing.assert_array_equal(got, want, err_msg=name)


def infer_and_compare(client, model_repo, model, feeds, output_names,
                      binary_in=lambda name: True, binary_out=lambda name: True):
    """Infers through tritonclient with the chosen inputs/outputs as binary data, checks
    that each output came back in the requested form, and compares with onnxruntime."""
    outputs = [httpclient.InferRequestedOutput(n, binary_data=binary_out(n))
               for n in output_names]
    result = client.infer(model, make_inputs(feeds, binary_in), outputs=outputs,
                          request_id=REQUEST_ID)
    response = result.get_response()
    assert response.get("id") == REQUEST_ID, response.get("id")
    assert response.get("model_name") == model
    returned = {o["name"]: o for o in response["outputs"]}
    assert sorted(returned) == sorted(output_names), sorted(returned)
    for name, o in returned.items():
        if binary_out(name):
            size = o.get("parameters", {}).get("binary_data_size")
            assert isinstance(size, int) and size > 0, f"{name}: not binary: {o}"
            assert "data" not in o, f"{name}: binary output also has JSON data"
        else:
            assert "data" in o, f"{name}: JSON output has no data: {o}"
            assert "binary_data_size" not in o.get("parameters", {}), o

    expected = reference(model_repo, model, feeds, output_names)
    for name in output_names:
        assert_matches(result.as_numpy(name), expected[name], name)
    return result


def strs(arr):
    """BYTES results as str: JSON mode gives str elements, binary mode gives bytes."""
    return np.vectorize(lambda v: v.decode("utf-8") if isinstance(v, bytes) else v,
                        otypes=[object])(arr)


# --------------------------------------------------------------------------- binary mode

def test_binary_digits(client, model_repo):
    x = digits_batch(8)
    result = infer_and_compare(client, model_repo, "digits", {"input": x},
                               ["probabilities", "label"])
    probs = result.as_numpy("probabilities")
    np.testing.assert_array_equal(result.as_numpy("label"), probs.argmax(axis=1))


def test_binary_lenet(client, model_repo):
    x = np.random.default_rng(11).uniform(0.0, 1.0, (3, 1, 28, 28)).astype(np.float32)
    infer_and_compare(client, model_repo, "lenet", {"input": x}, ["logits"])


def test_binary_resnet(client, model_repo):
    x = np.random.default_rng(12).standard_normal((1, 3, 224, 224)).astype(np.float32)
    infer_and_compare(client, model_repo, "resnet", {"input": x}, ["logits"])


def test_binary_identity_all_dtypes(client, model_repo):
    feeds = identity_feeds()
    outputs = [f"y_{s}" for s in IDENTITY_DTYPES]
    result = infer_and_compare(client, model_repo, "identity_all", feeds, outputs)
    for suffix in IDENTITY_DTYPES:
        # Identity over binary data: every byte comes back as sent, floats included.
        got, sent = result.as_numpy(f"y_{suffix}"), feeds[f"x_{suffix}"]
        assert got.tobytes() == sent.tobytes(), suffix


def test_binary_add_fixed(client, model_repo):
    rng = np.random.default_rng(14)
    a = rng.standard_normal((2, 2)).astype(np.float32)
    b = rng.standard_normal((2, 2)).astype(np.float32)
    result = infer_and_compare(client, model_repo, "add_fixed", {"a": a, "b": b}, ["sum"])
    np.testing.assert_allclose(result.as_numpy("sum"), a + b, rtol=RTOL, atol=ATOL)


def test_binary_data_output_default(client, model_repo):
    """No outputs requested: tritonclient sets `binary_data_output`, so every output comes
    back as binary data."""
    x = digits_batch(4)
    inp = make_inputs({"input": x}, lambda _: True)
    result = client.infer("digits", inp)
    outs = {o["name"]: o for o in result.get_response()["outputs"]}
    assert sorted(outs) == ["label", "probabilities"]
    for name, o in outs.items():
        assert "data" not in o and o["parameters"]["binary_data_size"] > 0, o
    expected = reference(model_repo, "digits", {"input": x}, ["probabilities", "label"])
    for name in outs:
        assert_matches(result.as_numpy(name), expected[name], name)


# --------------------------------------------------------------------------- mixed

def test_mixed_identity_all(client, model_repo):
    """Alternate inputs binary/JSON and, independently, outputs JSON/binary."""
    feeds = identity_feeds()
    names = list(feeds)
    binary_inputs = set(names[0::2])
    outputs = [f"y_{s}" for s in IDENTITY_DTYPES]
    binary_outputs = set(outputs[1::2])
    assert binary_inputs and set(names) - binary_inputs
    assert binary_outputs and set(outputs) - binary_outputs
    infer_and_compare(client, model_repo, "identity_all", feeds, outputs,
                      binary_in=lambda n: n in binary_inputs,
                      binary_out=lambda n: n in binary_outputs)


def test_mixed_add_fixed(client, model_repo):
    rng = np.random.default_rng(15)
    feeds = {"a": rng.standard_normal((2, 2)).astype(np.float32),
             "b": rng.standard_normal((2, 2)).astype(np.float32)}
    infer_and_compare(client, model_repo, "add_fixed", feeds, ["sum"],
                      binary_in=lambda n: n == "a", binary_out=lambda n: False)


@pytest.mark.parametrize("binary_in", [True, False])
def test_mixed_digits_outputs(client, model_repo, binary_in):
    infer_and_compare(client, model_repo, "digits", {"input": digits_batch(5)},
                      ["probabilities", "label"],
                      binary_in=lambda n: binary_in,
                      binary_out=lambda n: n == "label")


# --------------------------------------------------------------------------- BYTES

BYTES_TEXT = np.array([["hello", ""], ["gr\u00fc\u00dfe \u65e5\u672c \U0001f600", "a b\tc"],
                       ["", "\u00e9"]], dtype=object)


@pytest.mark.parametrize("binary_in,binary_out",
                         [(False, False), (True, True), (True, False), (False, True)],
                         ids=["json", "binary", "binary-in-json-out", "json-in-binary-out"])
def test_bytes_round_trip(client, model_repo, binary_in, binary_out):
    inp = httpclient.InferInput("text", list(BYTES_TEXT.shape), "BYTES")
    inp.set_data_from_numpy(BYTES_TEXT, binary_data=binary_in)
    out = httpclient.InferRequestedOutput("echo", binary_data=binary_out)
    result = client.infer("identity_bytes", [inp], outputs=[out], request_id=REQUEST_ID)
    (o,) = result.get_response()["outputs"]
    assert o["name"] == "echo" and o["datatype"] == "BYTES", o
    assert o["shape"] == list(BYTES_TEXT.shape), o
    if binary_out:
        # 4-byte length prefix per element plus the UTF-8 bytes.
        want_size = sum(4 + len(s.encode("utf-8")) for s in BYTES_TEXT.flat)
        assert o["parameters"]["binary_data_size"] == want_size, o
        assert "data" not in o
    else:
        assert o["data"] == list(BYTES_TEXT.flat), o
    got = result.as_numpy("echo")
    assert got.shape == BYTES_TEXT.shape, got.shape
    assert strs(got).tolist() == BYTES_TEXT.tolist()

    (want,) = reference(model_repo, "identity_bytes", {"text": BYTES_TEXT}, ["echo"]).values()
    assert strs(got).tolist() == want.tolist()


def test_bytes_binary_raw_bytes(client):
    """Binary BYTES input given as bytes objects (not str) echoes byte for byte."""
    raw = np.array([["caf\u00e9".encode("utf-8"), b""]], dtype=np.object_)
    inp = httpclient.InferInput("text", [1, 2], "BYTES")
    inp.set_data_from_numpy(raw, binary_data=True)
    result = client.infer("identity_bytes", [inp],
                          outputs=[httpclient.InferRequestedOutput("echo", binary_data=True)])
    assert result.as_numpy("echo").tolist() == raw.tolist()


# --------------------------------------------------------------------------- config, stats

def test_get_model_config_digits(client):
    config = client.get_model_config("digits")
    assert config["name"] == "digits"
    assert config["input"][0]["name"] == "input"
    assert config["input"][0]["data_type"] == "TYPE_FP32"
    outputs = {o["name"]: o["data_type"] for o in config["output"]}
    assert outputs == {"probabilities": "TYPE_FP32", "label": "TYPE_INT64"}
    assert isinstance(config["max_batch_size"], int)


def test_get_model_config_bytes(client):
    config = client.get_model_config("identity_bytes")
    assert config["input"][0]["data_type"] == "TYPE_STRING"
    assert config["output"][0]["data_type"] == "TYPE_STRING"


def _digits_stats(client):
    stats = client.get_inference_statistics("digits")["model_stats"]
    assert len(stats) == 1 and stats[0]["name"] == "digits", stats
    return stats[0]


def test_inference_statistics_grow(client):
    before = _digits_stats(client)
    x = digits_batch(2)
    for _ in range(3):
        client.infer("digits", make_inputs({"input": x}, lambda _: True))
    after = _digits_stats(client)
    assert after["inference_stats"]["success"]["count"] == \
        before["inference_stats"]["success"]["count"] + 3, (before, after)
    assert after["execution_count"] == before["execution_count"] + 3, (before, after)
    assert after["inference_count"] >= before["inference_count"] + 3, (before, after)
    assert after["inference_stats"]["success"]["ns"] > before["inference_stats"]["success"]["ns"]
    assert after["inference_stats"]["compute_infer"]["count"] == \
        before["inference_stats"]["compute_infer"]["count"] + 3
    assert after["last_inference"] >= before["last_inference"]
