"""Azure-ML-style scoring against a real `scoria serve`: the sample score hooks, scoring
without a hook, `POST /score` and `--default-model`, the hook sandbox through HTTP, malformed
score bodies, and malformed v2 binary-extension requests.

Results are compared with onnxruntime running the same model file on the same inputs. The
sandbox tests run every fixture hook of tests/fixtures/hooks/ behind its own model in one
server (the endless loop costs the default 5 s per-request time limit, once). All traffic goes
to 127.0.0.1; nothing loops unbounded.
"""

import http.client
import json
import re
import shutil
import struct
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from sklearn.datasets import load_digits

from conftest import REPO, ScoriaServer, make_repo

HTTP_TIMEOUT_S = 120.0
RTOL = 1e-4
ATOL = 1e-6
HOOK_FIXTURES = REPO / "tests" / "fixtures" / "hooks"
HOOK_TIME_LIMIT_S = 5.0  # HookLimits::default().time


# --------------------------------------------------------------------------- helpers

class Response:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"<{self.status} {self.body[:400]!r}>"


def request(addr, method, path, body=None, headers=None, timeout=HTTP_TIMEOUT_S):
    """One HTTP request on a fresh connection; `body` is bytes or a JSON-able value."""
    host, port = addr.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        hdrs = dict(headers or {})
        if body is not None and not isinstance(body, (bytes, bytearray)):
            body = json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        conn.request(method, path, body=body, headers=hdrs)
        resp = conn.getresponse()
        data = resp.read()
        return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
    finally:
        conn.close()


def score(addr, model, body, **kw):
    path = "/score" if model is None else f"/models/{model}/score"
    return request(addr, "POST", path, body, **kw)


def ok_json(resp):
    assert resp.status == 200, resp
    assert resp.headers.get("content-type", "").startswith("application/json"), resp.headers
    return resp.json()


def error_of(resp, status):
    """Checks `resp` is `status` with a JSON `{"error": "<non-empty>"}` body; returns it."""
    assert resp.status == status, resp
    assert resp.headers.get("content-type", "").startswith("application/json"), resp.headers
    body = resp.json()
    assert set(body) == {"error"}, body
    assert isinstance(body["error"], str) and body["error"], body
    return body["error"]


def ort_session(model_dir):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(Path(model_dir) / "1" / "model.onnx"), sess_options=opts,
                                providers=["CPUExecutionProvider"])


def softmax(logits):
    z = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


_DIGITS = load_digits()
# Ten real rows, one of each class, from across the data set.
DIGIT_ROWS = np.array([np.flatnonzero(_DIGITS.target == k)[17 * k + 3] for k in range(10)])
DIGIT_ZERO = _DIGITS.data[0].astype(np.float32)  # target 0


def digits_rows():
    return _DIGITS.data[DIGIT_ROWS].astype(np.float32), _DIGITS.target[DIGIT_ROWS]


def assert_digit_zero_scores(addr, model="digits"):
    """A normal request on the sample digits hook still works."""
    body = ok_json(score(addr, model, {"data": DIGIT_ZERO.tolist()}))
    assert [p["class"] for p in body["predictions"]] == [0], body


def assert_alive(addr):
    resp = request(addr, "GET", "/v2/health/live", timeout=10)
    assert resp.status == 200 and resp.json() == {"live": True}, resp
    assert_digit_zero_scores(addr)


def strip_hook(model_dir):
    """Removes the `hook = ...` line from config.toml and deletes score.rhai."""
    cfg = model_dir / "config.toml"
    lines = cfg.read_text().splitlines()
    kept = [ln for ln in lines if not re.match(r"\s*hook\s*=", ln)]
    assert len(kept) == len(lines) - 1, lines
    cfg.write_text("\n".join(kept) + "\n")
    (model_dir / "score.rhai").unlink()


def use_hook(model_dir, hook_file):
    """Makes `model_dir` (a digits copy) use `hook_file` instead of score.rhai. The key goes
    at the top: config.toml ends inside a [tags] table."""
    strip_hook(model_dir)
    shutil.copy(hook_file, model_dir / hook_file.name)
    cfg = model_dir / "config.toml"
    cfg.write_text(f'hook = "{hook_file.name}"\n' + cfg.read_text())


# --------------------------------------------------------------------------- sample hooks

def test_digits_hook_batch_matches_onnxruntime_and_targets(server, model_repo):
    x, targets = digits_rows()
    body = ok_json(score(server, "digits", {"data": x.tolist()}))
    preds = body["predictions"]
    assert isinstance(preds, list) and len(preds) == len(x), body
    for p in preds:
        assert set(p) == {"label", "class", "probability", "probabilities"}, p

    probs_ref, label_ref = ort_session(model_repo / "digits").run(
        ["probabilities", "label"], {"input": x})
    want = probs_ref.argmax(axis=1)
    np.testing.assert_array_equal(label_ref, want)  # the model's own ArgMax agrees

    classes = np.array([p["class"] for p in preds])
    np.testing.assert_array_equal(classes, want)
    assert [p["label"] for p in preds] == [str(c) for c in want]  # labels.txt is 0..9
    got_probs = np.array([p["probabilities"] for p in preds], dtype=np.float64)
    assert got_probs.shape == (len(x), 10), got_probs.shape
    np.testing.assert_allclose(got_probs, probs_ref, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose([p["probability"] for p in preds],
                               probs_ref[np.arange(len(x)), want], rtol=RTOL, atol=ATOL)

    right = classes == targets
    np.testing.assert_array_equal(classes[right], targets[right])
    assert right.sum() >= 9, f"only {right.sum()}/10 right: {classes} vs targets {targets}"


def test_digits_hook_single_flat_row(server, model_repo):
    x, targets = digits_rows()
    row = x[3]
    body = ok_json(score(server, "digits", {"data": row.tolist()}))
    (pred,) = body["predictions"]
    (probs_ref,) = ort_session(model_repo / "digits").run(["probabilities"], {"input": row[None]})
    assert pred["class"] == int(probs_ref[0].argmax()) == targets[3], (pred, targets[3])
    np.testing.assert_allclose(pred["probabilities"], probs_ref[0], rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("model,shape", [
    ("lenet", (2, 1, 28, 28)),  # a batch
    ("resnet", (3, 224, 224)),  # one unbatched image
])
def test_top5_hooks_match_onnxruntime(server, model_repo, model, shape):
    rng = np.random.default_rng(7)
    x = rng.standard_normal(shape).astype(np.float32)
    body = ok_json(score(server, model, {"data": x.tolist()}))

    batch = x if len(shape) == 4 else x[None]
    (logits,) = ort_session(model_repo / model).run(["logits"], {"input": batch})
    probs = softmax(logits)
    preds = body["predictions"]
    assert len(preds) == len(batch), body
    for i, pred in enumerate(preds):
        top = pred["top_k"]
        assert len(top) == 5, pred
        order = np.argsort(-probs[i], kind="stable")
        # The reference has no near-ties around the top 5, so the order is well defined.
        gaps = -np.diff(probs[i][order[:6]])
        assert (gaps > 1e-4 * probs[i][order[0]]).all(), gaps
        assert [e["class"] for e in top] == order[:5].tolist(), (top, order[:5])
        got = np.array([e["probability"] for e in top])
        np.testing.assert_allclose(got, probs[i][order[:5]], rtol=RTOL)
        assert (np.diff(got) <= 0).all(), f"not sorted descending: {got}"


# --------------------------------------------------------------------------- no hook

def test_no_hook_data_and_inputs(start_server):
    srv = start_server(models=["digits"], prepare=lambda repo: strip_hook(repo / "digits"))
    x, targets = digits_rows()
    row = x[0]
    (probs_ref,) = ort_session(srv.model_repo / "digits").run(["probabilities"], {"input": x})

    for body in ({"data": [row.tolist()]}, {"inputs": {"input": [row.tolist()]}},
                 {"data": row.tolist()}):
        got = ok_json(score(srv.addr, "digits", body))
        assert set(got) == {"probabilities", "label"}, got
        assert got["label"] == [int(targets[0])], got
        assert np.array(got["probabilities"]).shape == (1, 10), got
        np.testing.assert_allclose(got["probabilities"], probs_ref[:1], rtol=RTOL, atol=ATOL)

    got = ok_json(score(srv.addr, "digits", {"inputs": {"input": x.tolist()}}))
    assert got["label"] == probs_ref.argmax(axis=1).tolist(), got
    np.testing.assert_allclose(got["probabilities"], probs_ref, rtol=RTOL, atol=ATOL)

    # The only model: POST /score scores on it.
    got = ok_json(score(srv.addr, None, {"data": [row.tolist()]}))
    assert got["label"] == [int(targets[0])], got


def test_score_default_model(start_server):
    def prepare(repo):
        strip_hook(repo / "digits")

    row = DIGIT_ZERO.tolist()
    several = start_server(models=["digits", "lenet"], prepare=prepare)
    msg = error_of(score(several.addr, None, {"data": [row]}), 404)
    assert "--default-model" in msg, msg
    assert ok_json(score(several.addr, "digits", {"data": [row]}))["label"] == [0]

    chosen = start_server(models=["digits", "lenet"], prepare=prepare,
                          args=["--default-model", "digits"])
    got = ok_json(score(chosen.addr, None, {"data": [row]}))
    assert got["label"] == [0], got


# --------------------------------------------------------------------------- sandbox

def hook_model(name):
    return f"hook_{Path(name).stem}"


@pytest.fixture(scope="module")
def hook_server():
    """One server with the sample digits model and, per fixture hook, a digits copy whose
    config names that hook."""
    fixtures = sorted(HOOK_FIXTURES.glob("*.rhai"))
    assert len(fixtures) >= 8, fixtures
    with tempfile.TemporaryDirectory(prefix="scoria-hooks-") as tmp:
        repo = make_repo(tmp, ["digits"])
        for f in fixtures:
            model_dir = repo / hook_model(f.name)
            shutil.copytree(repo / "digits", model_dir)
            use_hook(model_dir, f)
        # Some fixture hooks cannot load by design: readiness must not wait for them.
        srv = ScoriaServer(repo, ["--strict-readiness=false"])
        try:
            yield srv
        finally:
            srv.stop()


@pytest.mark.parametrize("hook,reason", [
    ("recursion.rhai", None),  # checked below: call depth or native stack
    ("giant_string.rhai", "a string grew past the limit of 4194304 bytes"),
    ("file_access.rhai",
     'line 3: import "/etc/passwd" refused: score hooks cannot load modules or files'),
], ids=["recursion", "giant_string", "file_access"])
def test_sandbox_limit_is_a_500_naming_the_hook(hook_server, hook, reason):
    addr, model = hook_server.addr, hook_model(hook)
    for _ in range(2):  # the hook survives its own failure
        msg = error_of(score(addr, model, {"data": DIGIT_ZERO.tolist()}), 500)
        assert msg.startswith(f"score hook {model}/{hook}"), msg
        if reason is not None:
            assert msg.endswith(reason), msg
        else:
            assert ("function calls nested deeper than the limit of 64 levels" in msg
                    or "(recursion too deep)" in msg), msg
        assert_alive(addr)


def test_sandbox_endless_loop_hits_the_time_limit(hook_server):
    """The loop runs into the 5 s limit; meanwhile the server keeps serving others."""
    addr, model = hook_server.addr, hook_model("loop.rhai")
    result = {}

    def call():
        t0 = time.monotonic()
        result["resp"] = score(addr, model, {"data": []})
        result["took"] = time.monotonic() - t0

    worker = threading.Thread(target=call)
    worker.start()
    try:
        time.sleep(0.5)
        assert worker.is_alive(), result  # still looping
        t0 = time.monotonic()
        assert_alive(addr)
        assert time.monotonic() - t0 < 3.0, "the looping hook blocked other requests"
    finally:
        worker.join(HOOK_TIME_LIMIT_S + 30)
    assert not worker.is_alive(), "the looping hook was not stopped"
    msg = error_of(result["resp"], 500)
    assert msg == f"score hook {model}/loop.rhai: exceeded the time limit of 5s", msg
    assert HOOK_TIME_LIMIT_S - 0.5 <= result["took"] < HOOK_TIME_LIMIT_S + 10, result["took"]
    assert_alive(addr)


@pytest.mark.parametrize("kind,what", [
    ("fn", "a function pointer (Fn(run)) at `.result[1]`"),
    ("model", "the `model` object at `.m`"),
    ("nan", "the number NaN (JSON has no NaN or infinity) at `.value`"),
], ids=["fn", "model", "nan"])
def test_sandbox_result_not_json(hook_server, kind, what):
    addr, model = hook_server.addr, hook_model("not_json.rhai")
    msg = error_of(score(addr, model, {"kind": kind}), 500)
    assert msg == (f"score hook {model}/not_json.rhai: run() returned a value that is not "
                   f"JSON: {what}"), msg
    assert_alive(addr)
    # What JSON can hold is converted: unit -> null, tensors -> nested arrays.
    got = ok_json(score(addr, model, {"kind": "other"}))
    assert got["ok"] is True and got["unit"] is None and got["t"] == [[1, 2], [3, 4]], got
    np.testing.assert_allclose(got["f"], [0.1], rtol=1e-6)


def test_sandbox_throw_is_a_400_with_the_message(hook_server):
    addr, model = hook_server.addr, hook_model("throw.rhai")
    assert error_of(score(addr, model, {}), 400) == 'missing "data" (got 0 keys)'
    assert error_of(score(addr, model, {"a": 1, "b": 2}), 400) == 'missing "data" (got 2 keys)'
    assert error_of(score(addr, model, {"kind": "map"}), 400) == '#{"code": 7, "reason": "bad"}'
    assert_alive(addr)


@pytest.mark.parametrize("hook,where,why", [
    ("bad_syntax.rhai", ":3:16: ", "Unexpected ';'"),
    ("init_fails.rhai", " line 4: ", "init() failed: Array index 100 out of bounds"),
], ids=["bad_syntax", "init_fails"])
def test_sandbox_hook_that_cannot_load(hook_server, hook, where, why):
    addr, model = hook_server.addr, hook_model(hook)
    reason = error_of(request(addr, "GET", f"/v2/models/{model}/ready"), 503)
    assert f"score hook {model}/{hook}{where}" in reason, reason
    assert why in reason, reason
    assert reason == error_of(request(addr, "GET", f"/v2/models/{model}/versions/1/ready"), 503)
    # Its routes answer 503 with the same reason; the other models serve.
    assert error_of(score(addr, model, {"data": DIGIT_ZERO.tolist()}), 503).endswith(reason)
    index = ok_json(request(addr, "POST", "/v2/repository/index", b""))
    entry = next(e for e in index if e["name"] == model)
    assert entry["state"] == "UNAVAILABLE" and entry["reason"] in reason, entry
    assert request(addr, "GET", "/v2/models/digits/ready").status == 200
    assert_alive(addr)


# --------------------------------------------------------------------------- malformed bodies

@pytest.fixture(scope="module")
def plain_digits_server():
    """digits without a hook, beside the sample digits with one."""
    with tempfile.TemporaryDirectory(prefix="scoria-nohook-") as tmp:
        repo = make_repo(tmp, ["digits"])
        shutil.copytree(repo / "digits", repo / "plain")
        strip_hook(repo / "plain")
        srv = ScoriaServer(repo)
        try:
            yield srv
        finally:
            srv.stop()


@pytest.mark.parametrize("model", ["digits", "plain"])
@pytest.mark.parametrize("body", [b"not json", b"", b'{"data": [1, 2', b"\xff\xfe{}"],
                         ids=["text", "empty", "truncated", "not_utf8"])
def test_score_body_not_json(plain_digits_server, model, body):
    addr = plain_digits_server.addr
    msg = error_of(score(addr, model, body), 400)
    assert msg.startswith("malformed scoring request"), msg
    assert_alive(addr)


ROW64, ROW63, ROW65 = list(range(64)), list(range(63)), list(range(65))
HOOK_ROWS = 'each row of "data" must hold 64 pixel values'
NO_FIT = "input 'input': data does not fit the model's shape [-1, 64]"


@pytest.mark.parametrize("model,data,want", [
    ("digits", ROW63, HOOK_ROWS),
    ("digits", [ROW64, ROW65], HOOK_ROWS),
    ("digits", [[ROW64]], HOOK_ROWS),
    ("plain", ROW63, NO_FIT),
    ("plain", [ROW65], NO_FIT),
    ("plain", [ROW64, ROW65], "input 'input': nested arrays are ragged"),
    ("plain", [[ROW64]], NO_FIT),
], ids=["hook-short", "hook-long", "hook-deep",
        "nohook-short", "nohook-long", "nohook-ragged", "nohook-deep"])
def test_score_data_of_the_wrong_size(plain_digits_server, model, data, want):
    addr = plain_digits_server.addr
    assert error_of(score(addr, model, {"data": data}), 400) == want
    assert_alive(addr)


def test_digits_hook_non_numeric_pixels_are_a_400(plain_digits_server):
    addr = plain_digits_server.addr
    msg = error_of(score(addr, "plain", {"data": [["a"] * 64]}), 400)
    assert "element 0" in msg, msg
    msg = error_of(score(addr, "digits", {"data": [["a"] * 64]}), 400)
    assert "element 0" in msg, msg


# --------------------------------------------------------------------------- binary requests

IDENTITY = {  # suffix: (datatype, sample data for shape [1, 3])
    "fp32": ("FP32", [1.5, 0.0, -2.0]), "fp64": ("FP64", [1.5, 0.0, -2.0]),
    "int8": ("INT8", [-128, 0, 127]), "int16": ("INT16", [-1, 0, 1]),
    "int32": ("INT32", [-1, 0, 1]), "int64": ("INT64", [-1, 0, 1]),
    "uint8": ("UINT8", [0, 1, 255]), "uint16": ("UINT16", [0, 1, 2]),
    "uint32": ("UINT32", [0, 1, 2]), "uint64": ("UINT64", [0, 1, 2]),
    "bool": ("BOOL", [True, False, True]),
}
ALL_INFER = "/v2/models/identity_all/infer"
BYTES_INFER = "/v2/models/identity_bytes/infer"
HEADER = "Inference-Header-Content-Length"


def identity_inputs(**data):
    """JSON inputs of identity_all, shape [1, 3]; keyword `suffix=[...]` replaces data."""
    return [{"name": f"x_{s}", "shape": [1, 3], "datatype": dt, "data": data.get(s, d)}
            for s, (dt, d) in IDENTITY.items()]


def binary_request(header, blob, header_length=None):
    """Body and headers of a binary-extension request: JSON `header`, then `blob`."""
    head = json.dumps(header).encode()
    n = len(head) if header_length is None else header_length
    return head + blob, {HEADER: str(n), "Content-Type": "application/octet-stream"}


def fp32_binary(size=None, blob=None):
    """identity_all with x_fp32 sent as binary data (`size` overrides binary_data_size)."""
    blob = np.array([[1.5, 0.0, -2.0]], dtype="<f4").tobytes() if blob is None else blob
    inputs = identity_inputs()
    fp32 = inputs[0]
    del fp32["data"]
    fp32["parameters"] = {"binary_data_size": len(blob) if size is None else size}
    return {"inputs": inputs}, blob


def bytes_elements(*items):
    return b"".join(struct.pack("<I", len(s)) + s for s in items)


def text_binary(blob, shape=(2, 2)):
    return {"inputs": [{"name": "text", "shape": list(shape), "datatype": "BYTES",
                        "parameters": {"binary_data_size": len(blob)}}]}, blob


def assert_valid_requests_work(addr):
    got = ok_json(request(addr, "POST", ALL_INFER, {"inputs": identity_inputs()}))
    outs = {o["name"]: o["data"] for o in got["outputs"]}
    for s, (_, d) in IDENTITY.items():
        assert outs[f"y_{s}"] == d, (s, outs[f"y_{s}"])
    body, headers = binary_request(*fp32_binary())
    got = ok_json(request(addr, "POST", ALL_INFER, body, headers))
    assert {o["name"]: o["data"] for o in got["outputs"]}["y_fp32"] == [1.5, 0.0, -2.0]
    body, headers = binary_request(*text_binary(bytes_elements(b"ab", b"", "gr\u00fc\u00df".encode(),
                                                                 b"z")))
    got = ok_json(request(addr, "POST", BYTES_INFER, body, headers))
    assert got["outputs"][0]["data"] == ["ab", "", "gr\u00fc\u00df", "z"], got


def test_binary_valid_requests(server):
    assert_valid_requests_work(server)


def _header_too_large():
    body, headers = binary_request(*fp32_binary())
    headers[HEADER] = str(len(body) + 1)
    return ALL_INFER, body, headers, (
        f"Inference-Header-Content-Length {len(body) + 1} is larger than the "
        f"{len(body)}-byte body")


def _header_not_a_number(value):
    def make():
        body, headers = binary_request(*fp32_binary())
        headers[HEADER] = value
        return ALL_INFER, body, headers, (
            f"Inference-Header-Content-Length '{value}' is not a byte count")
    make.__name__ = f"header_length_{value!r}"
    return make


def _size_disagrees():
    body, headers = binary_request(*fp32_binary(blob=b"\0" * 8))
    return ALL_INFER, body, headers, (
        "input 'x_fp32': binary_data_size 8 disagrees with the shape: 3 FP32 elements of "
        "4 bytes need 12")


def _size_overruns():
    body, headers = binary_request(*fp32_binary(size=20))
    return ALL_INFER, body, headers, (
        "input 'x_fp32': binary_data_size 20 overruns the 12 bytes of binary data left in "
        "the body")


def _bytes_length_overruns():
    blob = bytes_elements(b"ab", b"", b"cde") + struct.pack("<I", 100) + b"f"
    body, headers = binary_request(*text_binary(blob))
    return BYTES_INFER, body, headers, (
        "input 'text': BYTES element 3: length 100 overruns the 1 bytes left")


def _bytes_huge_length():
    blob = struct.pack("<I", 0xFFFFFFFF) + b"xyz"
    body, headers = binary_request(*text_binary(blob, shape=(1, 2)))
    return BYTES_INFER, body, headers, (
        "input 'text': BYTES element 0: length 4294967295 overruns the 3 bytes left")


def _bytes_truncated_prefix():
    blob = bytes_elements(b"ab", b"", b"cde") + b"\x01\x00"
    body, headers = binary_request(*text_binary(blob))
    return BYTES_INFER, body, headers, (
        "input 'text': BYTES element 3: 2 bytes left, too few for a 4-byte length")


def _json_out_of_range(suffix, value, want):
    def make():
        raw = json.dumps({"inputs": identity_inputs(**{suffix: [1, value, 1]})}).encode()
        return ALL_INFER, raw, {"Content-Type": "application/json"}, want
    make.__name__ = f"{suffix}_{value}"
    return make


def _binary_unknown_output():
    header, blob = fp32_binary()
    header["outputs"] = [{"name": "y_nope", "parameters": {"binary_data": True}}]
    body, headers = binary_request(header, blob)
    return ALL_INFER, body, headers, "unknown output 'y_nope'"


@pytest.mark.parametrize("make", [
    _header_too_large,
    _header_not_a_number("abc"),
    _header_not_a_number("-5"),
    _header_not_a_number("12 34"),
    _size_disagrees,
    _size_overruns,
    _bytes_length_overruns,
    _bytes_huge_length,
    _bytes_truncated_prefix,
    _json_out_of_range("uint8", 300,
                       "input 'x_uint8': element 1: expected an integer in the UINT8 range, "
                       "found 300"),
    _json_out_of_range("int8", -129,
                       "input 'x_int8': element 1: expected an integer in the INT8 range, "
                       "found -129"),
    _json_out_of_range("uint64", -1,
                       "input 'x_uint64': element 1: expected an integer in the UINT64 range, "
                       "found -1"),
    _json_out_of_range("int32", 2 ** 31,
                       "input 'x_int32': element 1: expected an integer in the INT32 range, "
                       "found 2147483648"),
    _json_out_of_range("fp32", 1e39,
                       "input 'x_fp32': element 1: expected an FP32 number, found "
                       "1000000000000000000000000000000000000000"),
    _binary_unknown_output,
], ids=lambda make: make.__name__.strip("_"))
def test_bad_binary_request_is_a_400(server, make):
    path, body, headers, want = make()
    msg = error_of(request(server, "POST", path, body, headers), 400)
    assert want in msg, msg
    assert_valid_requests_work(server)


def test_request_data_the_hook_cannot_take_is_a_client_error(plain_digits_server):
    """Values out of FP32's range or nested too deep are the request's fault (400, naming the
    hook), and a request larger than a script may hold is a 413; the server keeps serving."""
    addr = plain_digits_server.addr
    msg = error_of(score(addr, "digits", {"data": [[1e39] * 64]}), 400)
    assert "FP32" in msg, msg
    msg = error_of(score(addr, "digits", {"data": [[[1]] * 64]}), 400)
    assert "score hook" in msg, msg
    row = [0] * 64
    msg = error_of(score(addr, "digits", {"data": [row] * 50000}), 413)
    assert "over the limit" in msg, msg
    assert_alive(addr)
