"""Compatibility of scoria's gRPC front end with the real Triton client (tritonclient[grpc]).

Every call tritonclient's gRPC client makes against a real `scoria serve` (conftest.py):
health, metadata, configuration, statistics, the repository, inference (raw contents, as
tritonclient sends them, and typed contents through the generated stub), async inference and
the bidirectional stream with request ids, keys, and the calls scoria does not implement.

Outputs are compared with onnxruntime running the same model file on the same inputs
(floats within `assert_allclose(rtol=1e-4, atol=1e-5)`, everything else exactly) and with
the HTTP route's JSON answer for the same request (exactly: the same engine served both).
"""

import json
import queue
import threading
import urllib.request

import grpc
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

RTOL = 1e-4
ATOL = 1e-5
MODELS = ["digits", "lenet", "resnet", "identity_all", "add_fixed", "identity_bytes"]
ORT_TO_NP = {
    "tensor(float)": np.float32, "tensor(double)": np.float64,
    "tensor(int8)": np.int8, "tensor(int16)": np.int16, "tensor(int32)": np.int32,
    "tensor(int64)": np.int64, "tensor(uint8)": np.uint8, "tensor(uint16)": np.uint16,
    "tensor(uint32)": np.uint32, "tensor(uint64)": np.uint64, "tensor(bool)": np.bool_,
    "tensor(string)": np.object_,
}
# The InferTensorContents field of each datatype.
TYPED_FIELD = {
    "FP32": "fp32_contents", "FP64": "fp64_contents", "INT8": "int_contents",
    "INT16": "int_contents", "INT32": "int_contents", "INT64": "int64_contents",
    "UINT8": "uint_contents", "UINT16": "uint_contents", "UINT32": "uint_contents",
    "UINT64": "uint64_contents", "BOOL": "bool_contents", "BYTES": "bytes_contents",
}


# --------------------------------------------------------------------------- helpers

def session(model_repo, model):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(model_repo / model / "1" / "model.onnx"),
                                sess_options=opts, providers=["CPUExecutionProvider"])


def sample_inputs(sess, seed=0):
    """Inputs for every model input: batch 1 for symbolic dimensions, seeded values."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for i in sess.get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in i.shape]
        dtype = ORT_TO_NP[i.type]
        if dtype is np.object_:
            words = ["hello", "", "gr\u00fc\u00dfe", "a b"]
            feeds[i.name] = np.array(rng.choice(words, size=shape), dtype=np.object_)
        elif dtype is np.bool_:
            feeds[i.name] = rng.integers(0, 2, size=shape).astype(np.bool_)
        elif np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            feeds[i.name] = rng.integers(max(info.min, -100), min(info.max, 100), size=shape,
                                         dtype=dtype)
        else:
            feeds[i.name] = rng.uniform(0, 16, size=shape).astype(dtype)
    return feeds


def reference(sess, feeds):
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds)))


def assert_matches(got, want, name):
    if want.dtype == np.object_:
        got = np.array([g.decode() if isinstance(g, bytes) else g for g in got.flat],
                       dtype=np.object_).reshape(got.shape)
        np.testing.assert_array_equal(got, want, err_msg=name)
        return
    assert got.dtype == want.dtype, f"{name}: dtype {got.dtype} != {want.dtype}"
    assert got.shape == want.shape, f"{name}: shape {got.shape} != {want.shape}"
    if np.issubdtype(want.dtype, np.floating):
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=name)
    else:
        np.testing.assert_array_equal(got, want, err_msg=name)


def grpc_inputs(feeds):
    inputs = []
    for name, arr in feeds.items():
        inp = grpcclient.InferInput(name, list(arr.shape), np_to_triton_dtype(arr.dtype))
        inp.set_data_from_numpy(arr)
        inputs.append(inp)
    return inputs


def http_json(scoria, path, body=None):
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    req = urllib.request.Request(f"http://{scoria.http}{path}",
                                 data=None if body is None else json.dumps(body).encode(),
                                 method="GET" if body is None else "POST")
    with opener.open(req, timeout=120) as resp:
        return json.loads(resp.read())


def http_outputs(scoria, model, feeds):
    """The HTTP route's JSON answer for `feeds`, as {name: array}."""
    def data(arr):
        if arr.dtype == np.object_:
            return [str(v) for v in arr.flat]
        return arr.flatten().tolist()

    body = {"inputs": [{"name": n, "shape": list(a.shape), "datatype": np_to_triton_dtype(a.dtype),
                        "data": data(a)} for n, a in feeds.items()]}
    resp = http_json(scoria, f"/v2/models/{model}/infer", body)
    out = {}
    for o in resp["outputs"]:
        dt = o["datatype"]
        np_dt = np.object_ if dt == "BYTES" else {
            "FP32": np.float32, "FP64": np.float64, "BOOL": np.bool_}.get(dt) or np.dtype(dt.lower())
        out[o["name"]] = np.array(o["data"], dtype=np_dt).reshape(o["shape"])
    return out


def status_of(excinfo):
    return str(excinfo.value.status())


# --------------------------------------------------------------------------- health, metadata

def test_server_health_and_metadata(client):
    assert client.is_server_live() is True
    assert client.is_server_ready() is True
    meta = client.get_server_metadata(as_json=True)
    assert meta["name"] == "scoria"
    assert "model_repository" in meta["extensions"]
    assert client.is_model_ready("digits") is True
    assert client.is_model_ready("digits", "1") is True
    assert client.is_model_ready("nope") is False


def test_model_metadata_and_config_match_http(client, scoria):
    meta = client.get_model_metadata("digits", as_json=True)
    assert meta["name"] == "digits" and meta["versions"] == ["1"]
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": ["-1", "64"]}]
    http_meta = http_json(scoria, "/v2/models/digits")
    assert [o["name"] for o in meta["outputs"]] == [o["name"] for o in http_meta["outputs"]]
    assert meta["platform"] == http_meta["platform"]

    config = client.get_model_config("digits", as_json=True)["config"]
    http_config = http_json(scoria, "/v2/models/digits/config")
    assert config.get("max_batch_size", 0) == http_config["max_batch_size"]
    for got, want in zip(config["input"], http_config["input"]):
        assert got["name"] == want["name"] and got["data_type"] == want["data_type"]
        assert [int(d) for d in got["dims"]] == want["dims"]
    with pytest.raises(InferenceServerException) as e:
        client.get_model_metadata("nope")
    assert "NOT_FOUND" in status_of(e)


# --------------------------------------------------------------------------- inference

@pytest.mark.parametrize("model", MODELS)
def test_infer_matches_onnxruntime_and_http(client, scoria, model_repo, model):
    sess = session(model_repo, model)
    feeds = sample_inputs(sess)
    want = reference(sess, feeds)
    result = client.infer(model, grpc_inputs(feeds), request_id="req-1")
    response = result.get_response(as_json=True)
    assert response["id"] == "req-1" and response["model_name"] == model
    http = http_outputs(scoria, model, feeds)
    for name, w in want.items():
        got = result.as_numpy(name)
        assert got is not None, f"output {name} missing"
        assert_matches(got, w, name)
        if w.dtype != np.object_:
            np.testing.assert_array_equal(got, http[name], err_msg=f"{name} vs HTTP")
    # Requested outputs only.
    first = sess.get_outputs()[0].name
    result = client.infer(model, grpc_inputs(feeds),
                          outputs=[grpcclient.InferRequestedOutput(first)])
    assert [o["name"] for o in result.get_response(as_json=True)["outputs"]] == [first]


def typed_request(model, feeds):
    req = service_pb2.ModelInferRequest(model_name=model, id="typed")
    for name, arr in feeds.items():
        dt = np_to_triton_dtype(arr.dtype)
        t = req.inputs.add(name=name, datatype=dt, shape=list(arr.shape))
        values = arr.flatten().tolist()
        if dt == "BYTES":
            values = [str(v).encode() for v in arr.flat]
        getattr(t.contents, TYPED_FIELD[dt]).extend(values)
    return req


def raw_outputs(response):
    """{name: array} from raw_output_contents."""
    out = {}
    for o, raw in zip(response.outputs, response.raw_output_contents):
        shape = list(o.shape)
        if o.datatype == "BYTES":
            items, i = [], 0
            while i < len(raw):
                n = int.from_bytes(raw[i:i + 4], "little")
                items.append(raw[i + 4:i + 4 + n].decode())
                i += 4 + n
            out[o.name] = np.array(items, dtype=np.object_).reshape(shape)
        else:
            dt = np.bool_ if o.datatype == "BOOL" else (
                {"FP32": np.float32, "FP64": np.float64}.get(o.datatype)
                or np.dtype(o.datatype.lower()))
            out[o.name] = np.frombuffer(raw, dtype=dt).reshape(shape)
    return out


@pytest.mark.parametrize("model", MODELS)
def test_typed_contents_match_onnxruntime(server, model_repo, model):
    sess = session(model_repo, model)
    feeds = sample_inputs(sess, seed=1)
    want = reference(sess, feeds)
    with grpc.insecure_channel(server, options=[
            ("grpc.max_receive_message_length", 64 << 20),
            ("grpc.max_send_message_length", 64 << 20)]) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        response = stub.ModelInfer(typed_request(model, feeds), timeout=120)
    assert response.id == "typed"
    got = raw_outputs(response)
    for name, w in want.items():
        assert_matches(got[name], w, name)


def test_async_infer(client, model_repo):
    sess = session(model_repo, "digits")
    feeds = sample_inputs(sess, seed=2)
    want = reference(sess, feeds)
    done = queue.Queue()
    client.async_infer("digits", grpc_inputs(feeds), lambda result, error: done.put((result, error)),
                       request_id="async-1")
    result, error = done.get(timeout=60)
    assert error is None, error
    assert result.get_response().id == "async-1"
    assert_matches(result.as_numpy("probabilities"), want["probabilities"], "probabilities")


def test_stream_answers_each_request_by_id(client, model_repo):
    cases = {}
    for i in range(12):
        model = ["digits", "lenet", "identity_all"][i % 3]
        sess = session(model_repo, model)
        feeds = sample_inputs(sess, seed=10 + i)
        cases[f"s-{i}"] = (model, feeds, reference(sess, feeds))
    results = queue.Queue()
    client.start_stream(callback=lambda result, error: results.put((result, error)))
    try:
        for rid, (model, feeds, _) in cases.items():
            client.async_stream_infer(model, grpc_inputs(feeds), request_id=rid)
        client.async_stream_infer("missing", grpc_inputs(cases["s-0"][1]), request_id="bad")
        got, errors = {}, []
        for _ in range(len(cases) + 1):
            result, error = results.get(timeout=120)
            if error is not None:
                errors.append(str(error))
            else:
                got[result.get_response().id] = result
    finally:
        client.stop_stream()
    assert len(errors) == 1 and "unknown model 'missing'" in errors[0], errors
    assert sorted(got) == sorted(cases)
    for rid, (model, _, want) in cases.items():
        assert got[rid].get_response().model_name == model
        for name, w in want.items():
            assert_matches(got[rid].as_numpy(name), w, f"{rid}/{name}")


def test_bad_requests_answer_invalid_argument(client):
    inp = grpcclient.InferInput("input", [1, 63], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 63), dtype=np.float32))
    with pytest.raises(InferenceServerException) as e:
        client.infer("digits", [inp])
    assert "INVALID_ARGUMENT" in status_of(e), e.value
    inp = grpcclient.InferInput("nope", [1, 64], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 64), dtype=np.float32))
    with pytest.raises(InferenceServerException) as e:
        client.infer("digits", [inp])
    assert "INVALID_ARGUMENT" in status_of(e) and "nope" in str(e.value)
    assert client.is_server_live()


# --------------------------------------------------------------------------- Triton extensions

def test_statistics_match_http(client, scoria):
    inp = grpcclient.InferInput("input", [1, 64], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 64), dtype=np.float32))
    client.infer("digits", [inp])
    stats = client.get_inference_statistics("digits", as_json=True)["model_stats"]
    http_stats = http_json(scoria, "/v2/models/digits/stats")["model_stats"]
    assert len(stats) == 1 and stats[0]["name"] == "digits"
    assert int(stats[0]["inference_count"]) == http_stats[0]["inference_count"] > 0
    success = stats[0]["inference_stats"]["success"]
    assert int(success["count"]) == http_stats[0]["inference_stats"]["success"]["count"]
    everything = client.get_inference_statistics(as_json=True)["model_stats"]
    assert {s["name"] for s in everything} >= {"digits", "lenet", "resnet"}


def test_repository_index_load_unload(start_server):
    srv = start_server(models=["digits", "lenet"])
    c = grpcclient.InferenceServerClient(url=srv.grpc)
    try:
        index = c.get_model_repository_index(as_json=True)["models"]
        assert sorted(m["name"] for m in index) == ["digits", "lenet"]
        assert all(m["state"] == "READY" for m in index)
        c.unload_model("lenet")
        assert c.is_model_ready("lenet") is False
        inp = grpcclient.InferInput("input", [1, 1, 28, 28], "FP32")
        inp.set_data_from_numpy(np.zeros((1, 1, 28, 28), dtype=np.float32))
        with pytest.raises(InferenceServerException) as e:
            c.infer("lenet", [inp])
        assert "UNAVAILABLE" in status_of(e) and "unloaded" in str(e.value)
        c.load_model("lenet")
        assert c.is_model_ready("lenet") is True
        assert c.infer("lenet", [inp]).as_numpy("logits").shape == (1, 10)
        with pytest.raises(InferenceServerException) as e:
            c.load_model("lenet", config=json.dumps({"max_batch_size": 4}))
        assert "INVALID_ARGUMENT" in status_of(e) and "not supported" in str(e.value)
    finally:
        c.close()


def test_unimplemented_calls_say_so(client):
    for call in (client.get_system_shared_memory_status, client.get_cuda_shared_memory_status,
                 client.get_trace_settings):
        with pytest.raises(InferenceServerException) as e:
            call()
        assert "UNIMPLEMENTED" in status_of(e), e.value


# --------------------------------------------------------------------------- keys

ADMIN = "admin-key-0123456789abcdef"
SCORER = "score-key-0123456789abcdef"


def test_keys_and_roles(start_server, tmp_path):
    keys = tmp_path / "keys.txt"
    keys.write_text(f"{ADMIN} admin\n{SCORER} score\n")
    keys.chmod(0o600)
    srv = start_server(models=["digits"], args=["--api-key-file", keys])
    c = grpcclient.InferenceServerClient(url=srv.grpc)
    bearer = lambda k: {"authorization": f"Bearer {k}"}  # noqa: E731
    inp = grpcclient.InferInput("input", [1, 64], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 64), dtype=np.float32))
    try:
        assert c.is_server_live() is True  # open
        for headers in (None, bearer("wrong-key-0123456789abcdef")):
            with pytest.raises(InferenceServerException) as e:
                c.infer("digits", [inp], headers=headers)
            assert "UNAUTHENTICATED" in status_of(e), e.value
        for key in (ADMIN, SCORER):
            assert c.infer("digits", [inp], headers=bearer(key)).as_numpy("label").shape == (1,)
        with pytest.raises(InferenceServerException) as e:
            c.get_model_repository_index(headers=bearer(SCORER))
        assert "PERMISSION_DENIED" in status_of(e), e.value
        with pytest.raises(InferenceServerException) as e:
            c.unload_model("digits", headers=bearer(SCORER))
        assert "PERMISSION_DENIED" in status_of(e), e.value
        assert c.get_model_repository_index(headers=bearer(ADMIN), as_json=True)["models"]
    finally:
        c.close()
