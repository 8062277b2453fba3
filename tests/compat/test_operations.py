"""Operations against a real `scoria serve`: the model repository extension (index, load,
unload, reload under load), graceful shutdown on SIGTERM, and API keys.

Each test starts its own short-lived server (conftest.start_server) with only the models it
needs, since it changes the server's state. All traffic goes to 127.0.0.1; every request
loop is bounded in time and count.
"""

import http.client
import json
import signal
import socket
import subprocess
import threading
import time

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from test_tritonclient import digits_batch, reference

HTTP_TIMEOUT_S = 120.0


# --------------------------------------------------------------------------- helpers

class Response:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"<{self.status} {self.body[:300]!r}>"


def request(addr, method, path, body=None, headers=None, timeout=HTTP_TIMEOUT_S, conn=None):
    """One HTTP request; `body` may be bytes or a JSON-able value. Uses `conn` if given
    (keep-alive), else a fresh connection that is closed afterwards."""
    host, port = addr.split(":")
    own = conn is None
    if own:
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
        if own:
            conn.close()


def assert_error(resp, status):
    assert resp.status == status, resp
    assert resp.headers.get("content-type", "").startswith("application/json"), resp.headers
    body = resp.json()
    assert isinstance(body.get("error"), str) and body["error"], body
    return body["error"]


def digits_request(n=2):
    x = digits_batch(n)
    return x, {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                           "data": x.ravel().tolist()}],
               "outputs": [{"name": "label"}]}


def index(addr, headers=None):
    resp = request(addr, "POST", "/v2/repository/index", body=b"", headers=headers)
    assert resp.status == 200, resp
    return {e["name"]: e for e in resp.json()}


def connection_refused(addr):
    """True when a new connection is not taken: refused, or reset because the listener closed
    while the handshake sat in its backlog (the kernel answers those with RST)."""
    host, port = addr.split(":")
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return False
    except (ConnectionRefusedError, ConnectionResetError):
        return True


# --------------------------------------------------------------------------- repository

def test_repository_index_lists_models_with_states(start_server):
    srv = start_server(models=["digits", "lenet"])
    entries = index(srv.addr)
    assert sorted(entries) == ["digits", "lenet"], entries
    for e in entries.values():
        assert e["state"] == "READY", e
        assert e["version"] == "1", e
    ready_only = request(srv.addr, "POST", "/v2/repository/index", body={"ready": True})
    assert ready_only.status == 200, ready_only
    assert sorted(e["name"] for e in ready_only.json()) == ["digits", "lenet"]


def test_unload_then_load(start_server):
    srv = start_server(models=["digits", "lenet"])
    x, body = digits_request(4)
    want = reference(srv.model_repo, "digits", {"input": x}, ["label"])["label"]

    resp = request(srv.addr, "POST", "/v2/repository/models/digits/unload")
    assert resp.status == 200, resp
    assert "digits" in assert_error(request(srv.addr, "GET", "/v2/models/digits/ready"), 503)
    assert_error(request(srv.addr, "POST", "/v2/models/digits/infer", body=body), 503)
    entries = index(srv.addr)
    assert entries["digits"]["state"] == "UNAVAILABLE", entries
    assert entries["lenet"]["state"] == "READY", entries
    # The other model is untouched.
    assert request(srv.addr, "GET", "/v2/models/lenet/ready").status == 200
    # Server readiness stays a server-level answer.
    assert request(srv.addr, "GET", "/v2/health/live").status == 200

    resp = request(srv.addr, "POST", "/v2/repository/models/digits/load")
    assert resp.status == 200, resp
    assert request(srv.addr, "GET", "/v2/models/digits/ready").status == 200
    resp = request(srv.addr, "POST", "/v2/models/digits/infer", body=body)
    assert resp.status == 200, resp
    (label,) = resp.json()["outputs"]
    np.testing.assert_array_equal(np.array(label["data"]), want)
    assert index(srv.addr)["digits"]["state"] == "READY"


def test_load_and_unload_unknown_model(start_server):
    srv = start_server(models=["digits"])
    err = assert_error(request(srv.addr, "POST", "/v2/repository/models/no_such_model/load"), 404)
    assert "no_such_model" in err
    err = assert_error(
        request(srv.addr, "POST", "/v2/repository/models/no_such_model/unload"), 404)
    assert "no_such_model" in err
    assert request(srv.addr, "GET", "/v2/models/digits/ready").status == 200


def test_reload_under_concurrent_requests(start_server):
    """4 threads send digits requests for ~3 s while the main thread reloads digits 5 times:
    no request may fail."""
    srv = start_server(models=["digits"])
    x, body = digits_request(2)
    payload = json.dumps(body).encode()
    want = reference(srv.model_repo, "digits", {"input": x}, ["label"])["label"].tolist()

    duration_s, max_requests_per_thread = 3.0, 20000
    stop = threading.Event()
    results = [[] for _ in range(4)]  # per thread: (status or error, labels or body)

    def worker(out):
        host, port = srv.addr.split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=HTTP_TIMEOUT_S)
        try:
            while not stop.is_set() and len(out) < max_requests_per_thread:
                try:
                    resp = request(srv.addr, "POST", "/v2/models/digits/infer", body=payload,
                                   headers={"Content-Type": "application/json"}, conn=conn)
                except (OSError, http.client.HTTPException) as e:
                    out.append((f"{type(e).__name__}: {e}", None))
                    conn.close()
                    conn = http.client.HTTPConnection(host, int(port), timeout=HTTP_TIMEOUT_S)
                    continue
                if resp.status == 200:
                    out.append((200, resp.json()["outputs"][0]["data"]))
                else:
                    out.append((resp.status, resp.body[:300]))
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, args=(r,), daemon=True) for r in results]
    start = time.monotonic()
    for t in threads:
        t.start()
    loads = []
    try:
        time.sleep(0.3)
        for _ in range(5):
            resp = request(srv.addr, "POST", "/v2/repository/models/digits/load")
            loads.append(resp)
            time.sleep(0.4)
        while time.monotonic() - start < duration_s:
            time.sleep(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=HTTP_TIMEOUT_S)
    assert not any(t.is_alive() for t in threads), "worker threads did not stop"

    assert [r.status for r in loads] == [200] * 5, loads
    flat = [r for out in results for r in out]
    failed = [r for r in flat if r[0] != 200]
    assert not failed, f"{len(failed)} of {len(flat)} requests failed, e.g. {failed[:5]}"
    wrong = [r for r in flat if r[1] != want]
    assert not wrong, f"{len(wrong)} wrong answers, e.g. {wrong[:3]} (want {want})"
    assert all(len(out) >= 5 for out in results), [len(out) for out in results]
    assert index(srv.addr)["digits"]["state"] == "READY"


# --------------------------------------------------------------------------- shutdown

def resnet_body(batch):
    x = np.random.default_rng(5).standard_normal((batch, 3, 224, 224)).astype(np.float32)
    inp = httpclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=True)
    out = httpclient.InferRequestedOutput("logits", binary_data=False)
    body, header_len = httpclient.InferenceServerClient.generate_request_body(
        [inp], outputs=[out])
    return x, body, {"Inference-Header-Content-Length": str(header_len),
                     "Content-Type": "application/octet-stream"}


def slow_resnet_batch(srv, at_least_s):
    """A resnet batch (8 or more, at most 64) that takes at least `at_least_s` on this
    server, judged from the time of a batch-1 request."""
    _, body, headers = resnet_body(1)
    t0 = time.monotonic()
    resp = request(srv.addr, "POST", "/v2/models/resnet/infer", body=body, headers=headers)
    one = time.monotonic() - t0
    assert resp.status == 200, resp
    return int(min(64, max(8, np.ceil(at_least_s / max(one, 1e-3)))))


class InFlight(threading.Thread):
    """Sends one request in a thread; `sent` is set once the body is on the wire."""

    def __init__(self, addr, path, body, headers):
        super().__init__(daemon=True)
        self.addr, self.path, self.body, self.headers = addr, path, body, headers
        self.sent = threading.Event()
        self.response = self.error = self.done_at = None

    def run(self):
        host, port = self.addr.split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=HTTP_TIMEOUT_S)
        try:
            conn.request("POST", self.path, body=self.body, headers=self.headers)
            self.sent.set()
            resp = conn.getresponse()
            self.response = Response(resp.status, dict(resp.getheaders()), resp.read())
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.error = e
        finally:
            self.done_at = time.monotonic()
            self.sent.set()
            conn.close()


def slow_request_in_flight(srv, at_least_s):
    """Starts a resnet request that takes at least `at_least_s` and returns once it is on the
    wire: (its input, the batch size, the InFlight thread)."""
    batch = slow_resnet_batch(srv, at_least_s=at_least_s)
    x, body, headers = resnet_body(batch)
    req = InFlight(srv.addr, "/v2/models/resnet/infer", body, headers)
    req.start()
    assert req.sent.wait(HTTP_TIMEOUT_S)
    time.sleep(0.2)
    return x, batch, req


def test_sigterm_drains_in_flight_request(start_server):
    drain_s = 60
    srv = start_server(models=["resnet"], args=["--drain-timeout", f"{drain_s}s"])
    x, batch, req = slow_request_in_flight(srv, at_least_s=1.5)
    assert req.done_at is None, "the request finished before SIGTERM: nothing to drain"
    srv.proc.send_signal(signal.SIGTERM)
    sigterm_at = time.monotonic()

    # While draining, the listener is closed: new connections are refused.
    refused_while_draining = False
    while req.done_at is None and time.monotonic() - sigterm_at < 5:
        if connection_refused(srv.addr):
            refused_while_draining = True
            break
        time.sleep(0.05)

    req.join(timeout=drain_s + 30)
    assert not req.is_alive(), "the in-flight request never completed"
    assert req.error is None, f"in-flight request failed: {req.error!r}\n{srv.logs()}"
    assert req.done_at > sigterm_at, "the request was not in flight at SIGTERM"
    assert req.response.status == 200, req.response
    (logits,) = req.response.json()["outputs"]
    assert logits["shape"] == [batch, 1000], logits["shape"]
    want = reference(srv.model_repo, "resnet", {"input": x}, ["logits"])["logits"]
    np.testing.assert_allclose(np.array(logits["data"], dtype=np.float32).reshape(want.shape),
                               want, rtol=1e-4, atol=1e-5)

    try:
        code = srv.proc.wait(timeout=drain_s)
    except subprocess.TimeoutExpired:
        pytest.fail(f"scoria did not exit within the {drain_s} s drain timeout\n{srv.logs()}")
    assert code == 0, f"exit status {code}\n{srv.logs()}"
    assert time.monotonic() - sigterm_at < drain_s
    assert connection_refused(srv.addr), "a connection was accepted after shutdown"
    if req.done_at - sigterm_at > 1.0:
        # The request ran for over a second after SIGTERM: there was time to see the
        # listener closed.
        assert refused_while_draining, "new connections were accepted while draining"


def test_drain_timeout_bounds_shutdown(start_server):
    """A request that outlasts --drain-timeout does not hold the process: it exits soon
    after the timeout, with status 1 and the reason."""
    drain_s = 1
    srv = start_server(models=["resnet"], args=["--drain-timeout", f"{drain_s}s"])
    _, _, req = slow_request_in_flight(srv, at_least_s=8.0)
    srv.proc.send_signal(signal.SIGTERM)
    sigterm_at = time.monotonic()
    try:
        code = srv.proc.wait(timeout=drain_s + 30)
    except subprocess.TimeoutExpired:
        pytest.fail(f"scoria did not exit after the drain timeout\n{srv.logs()}")
    exited_after = time.monotonic() - sigterm_at
    assert req.done_at is None or req.done_at >= sigterm_at, "request finished before SIGTERM"
    assert exited_after < drain_s + 3.0, \
        f"exited {exited_after:.1f} s after SIGTERM with --drain-timeout {drain_s}s\n{srv.logs()}"
    assert code == 1, f"exit status {code}\n{srv.logs()}"
    assert "drain timeout" in srv.err_path.read_text(errors="replace"), srv.logs()
    req.join(timeout=30)

def test_unload_with_a_request_in_flight(start_server):
    """Unloading a model while one of its requests runs answers at once; the running request
    still completes with the right answer, and only requests after the unload get 503."""
    srv = start_server(models=["resnet", "digits"])
    x, _, req = slow_request_in_flight(srv, at_least_s=1.5)
    assert req.done_at is None, "the request finished before the unload: nothing in flight"

    t0 = time.monotonic()
    resp = request(srv.addr, "POST", "/v2/repository/models/resnet/unload")
    unloaded_at = time.monotonic()
    assert resp.status == 200, resp
    assert req.done_at is None, "the unload waited for the request in flight"
    assert unloaded_at - t0 < 1.0, f"unload took {unloaded_at - t0:.2f} s"
    _, one, one_headers = resnet_body(1)
    assert "resnet" in assert_error(
        request(srv.addr, "POST", "/v2/models/resnet/infer", body=one, headers=one_headers), 503)
    assert index(srv.addr)["resnet"]["state"] == "UNAVAILABLE"

    req.join(timeout=HTTP_TIMEOUT_S)
    assert not req.is_alive() and req.error is None, req.error
    assert req.response.status == 200, req.response
    (logits,) = req.response.json()["outputs"]
    want = reference(srv.model_repo, "resnet", {"input": x}, ["logits"])["logits"]
    np.testing.assert_allclose(np.array(logits["data"], dtype=np.float32).reshape(want.shape),
                               want, rtol=1e-4, atol=1e-5)
    # The other model never noticed.
    _, digits_body = digits_request(2)
    assert request(srv.addr, "POST", "/v2/models/digits/infer", body=digits_body).status == 200



# --------------------------------------------------------------------------- API keys

@pytest.fixture
def keyed_server(start_server, tmp_path):
    """A server with an API key file from `scoria keys generate` plus an appended score key.
    Returns (server, {"primary": k, "secondary": k, "score": k})."""
    from conftest import scoria_binary

    keyfile = tmp_path / "api-keys"
    gen = subprocess.run([str(scoria_binary()), "keys", "generate", str(keyfile)],
                         capture_output=True, text=True, timeout=60)
    assert gen.returncode == 0, gen.stderr
    lines = [ln.split() for ln in keyfile.read_text().splitlines()
             if ln.strip() and not ln.lstrip().startswith("#")]
    assert len(lines) == 2 and all(len(ln) == 2 and ln[1] == "admin" for ln in lines), lines
    keys = {"primary": lines[0][0], "secondary": lines[1][0],
            "score": "score-" + "5c0a" * 8}
    assert len(set(keys.values())) == 3
    with open(keyfile, "a") as f:
        f.write(f"{keys['score']} score\n")
    srv = start_server(models=["digits"], args=["--api-key-file", keyfile])
    return srv, keys


def bearer(key):
    return {"Authorization": f"Bearer {key}"}


def test_auth_missing_or_wrong_key(keyed_server):
    srv, keys = keyed_server
    _, body = digits_request()
    for headers in [None, bearer("not-a-valid-key-0123456789abcdef"),
                    {"Authorization": f"Basic {keys['primary']}"},
                    {"Authorization": "Bearer "}]:
        resp = request(srv.addr, "POST", "/v2/models/digits/infer", body=body, headers=headers)
        assert_error(resp, 401)
        assert resp.headers.get("www-authenticate", "").startswith("Bearer"), resp.headers
        for k in keys.values():
            assert k.encode() not in resp.body, "a key was echoed in an error"
    for path in ["/v2", "/v2/models/digits", "/v2/models/digits/config",
                 "/v2/models/digits/stats"]:
        assert_error(request(srv.addr, "GET", path), 401)
    assert_error(request(srv.addr, "POST", "/v2/repository/index", body=b""), 401)


@pytest.mark.parametrize("which", ["primary", "secondary", "score"])
def test_auth_valid_keys_infer(keyed_server, which):
    srv, keys = keyed_server
    _, body = digits_request()
    resp = request(srv.addr, "POST", "/v2/models/digits/infer", body=body,
                   headers=bearer(keys[which]))
    assert resp.status == 200, resp
    assert resp.json()["outputs"][0]["name"] == "label"
    resp = request(srv.addr, "GET", "/v2/models/digits", headers=bearer(keys[which]))
    assert resp.status == 200, resp


def test_auth_roles_on_repository(keyed_server):
    srv, keys = keyed_server
    score = bearer(keys["score"])
    assert_error(request(srv.addr, "POST", "/v2/repository/index", body=b"", headers=score), 403)
    assert_error(request(srv.addr, "POST", "/v2/repository/models/digits/unload",
                         headers=score), 403)
    assert_error(request(srv.addr, "POST", "/v2/repository/models/digits/load",
                         headers=score), 403)
    # The score key's refused unload did nothing.
    assert request(srv.addr, "GET", "/v2/models/digits/ready", headers=score).status == 200
    for which in ["primary", "secondary"]:
        assert "digits" in index(srv.addr, headers=bearer(keys[which]))
    resp = request(srv.addr, "POST", "/v2/repository/models/digits/load",
                   headers=bearer(keys["primary"]))
    assert resp.status == 200, resp


def test_auth_health_is_open(keyed_server):
    srv, _ = keyed_server
    for path in ["/v2/health/live", "/v2/health/ready"]:
        resp = request(srv.addr, "GET", path)
        assert resp.status == 200, (path, resp)


@pytest.mark.parametrize("which", ["primary", "score"])
def test_auth_tritonclient_headers(keyed_server, which):
    srv, keys = keyed_server
    x = digits_batch(3)
    client = httpclient.InferenceServerClient(url=srv.addr, connection_timeout=60.0,
                                              network_timeout=HTTP_TIMEOUT_S)
    try:
        headers = bearer(keys[which])
        assert client.is_model_ready("digits", headers=headers) is True
        assert client.get_model_metadata("digits", headers=headers)["name"] == "digits"
        inp = httpclient.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=True)
        result = client.infer("digits", [inp], headers=headers)
        want = reference(srv.model_repo, "digits", {"input": x}, ["label"])["label"]
        np.testing.assert_array_equal(result.as_numpy("label"), want)
        with pytest.raises(InferenceServerException):
            client.infer("digits", [inp])
        with pytest.raises(InferenceServerException):
            client.infer("digits", [inp], headers=bearer("not-a-valid-key-0123456789abcdef"))
    finally:
        client.close()
