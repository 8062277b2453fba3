"""Operations surface of a real `scoria serve`: `GET /metrics` (Prometheus text format, parsed
with prometheus_client's parser), `GET /swagger.json` (validated as OpenAPI 3 with
openapi-spec-validator) and the Azure ML liveness route `GET /`.

The metrics test starts its own server so that no other test's traffic lands in the deltas.
"""

import http.client
import json

import pytest
from openapi_spec_validator import validate
from prometheus_client.parser import text_string_to_metric_families

from test_scoring import DIGIT_ZERO, digits_rows

HTTP_TIMEOUT_S = 60.0
INFER_ROUTE = "/v2/models/{model}/infer"


def request(addr, method, path, body=None, headers=None):
    """(status, lower-cased headers, body bytes) of one request on a fresh connection."""
    host, port = addr.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=HTTP_TIMEOUT_S)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


# --------------------------------------------------------------------------- /metrics

def scrape(addr):
    """{(sample name, sorted label items): value} of one /metrics scrape, plus the families."""
    status, headers, body = request(addr, "GET", "/metrics")
    assert status == 200, body[:300]
    assert headers.get("content-type", "").startswith("text/plain"), headers
    families = list(text_string_to_metric_families(body.decode("utf-8")))
    samples = {}
    for fam in families:
        assert fam.name.startswith("scoria_"), fam.name
        for s in fam.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            assert key not in samples, f"duplicate sample {key}"
            samples[key] = s.value
    return samples, {f.name: f for f in families}


def value(samples, name, **labels):
    """The value of the one sample `name` with exactly `labels`, 0 when absent (a series is
    created on first use)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_count_requests(start_server):
    srv = start_server(models=["digits"])
    addr = srv.addr
    x, _ = digits_rows()
    digits = dict(model="digits", version="1")

    before, _ = scrape(addr)
    n = 5
    sent = received = 0
    for i in range(n):
        body = json.dumps({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32",
                                       "data": x[i].tolist()}]}).encode()
        status, _, resp = request(addr, "POST", "/v2/models/digits/infer", body)
        assert status == 200, resp
        sent, received = sent + len(body), received + len(resp)
    bad = b'{"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": [1]}]}'
    # Chunked (no Content-Length): its bytes count all the same.
    status, _, resp = request(addr, "POST", "/v2/models/digits/infer", iter([bad[:10], bad[10:]]))
    assert status == 400, resp
    sent, received = sent + len(bad), received + len(resp)
    after, families = scrape(addr)

    def grew(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    infer = dict(digits, route=INFER_ROUTE)
    assert grew("scoria_requests_total", outcome="success", **infer) == n
    assert grew("scoria_requests_total", outcome="client_error", **infer) == 1
    assert grew("scoria_requests_total", outcome="server_error", **infer) == 0
    assert grew("scoria_request_duration_seconds_count", **infer) == n + 1
    assert grew("scoria_request_duration_seconds_sum", **infer) > 0
    # Queue and compute time exist for requests that reached inference.
    for hist in ("scoria_request_queue_seconds", "scoria_request_compute_seconds"):
        assert grew(f"{hist}_count", **digits) == n, hist
        assert grew(f"{hist}_sum", **digits) > 0, hist
        assert value(after, f"{hist}_bucket", le="+Inf", **digits) == \
            value(after, f"{hist}_count", **digits), hist
    assert grew("scoria_request_bytes_total", **infer) == sent
    assert grew("scoria_response_bytes_total", **infer) == received

    assert families["scoria_requests"].type == "counter"
    for hist in ("scoria_request_duration_seconds", "scoria_request_queue_seconds",
                 "scoria_request_compute_seconds"):
        assert families[hist].type == "histogram", hist
    assert value(after, "scoria_model_versions", model="digits", state="ready",
                 version="1") == 1
    others = [k for k in after if k[0] == "scoria_model_versions"
              and dict(k[1])["model"] == "digits" and dict(k[1])["state"] != "ready"]
    assert all(after[k] == 0 for k in others), {k: after[k] for k in others}
    assert value(after, "scoria_process_resident_memory_bytes") > 0
    assert value(after, "scoria_process_open_fds") > 0
    assert value(after, "scoria_process_start_time_seconds") > 1.6e9


def test_metrics_count_score_requests(start_server):
    """The scoring routes are counted too, by route and outcome."""
    srv = start_server(models=["digits"])
    addr = srv.addr
    before, _ = scrape(addr)
    good = json.dumps({"data": DIGIT_ZERO.tolist()}).encode()
    for _ in range(2):
        status, _, resp = request(addr, "POST", "/models/digits/score", good)
        assert status == 200, resp
    status, _, resp = request(addr, "POST", "/score", good)  # the only model
    assert status == 200, resp
    status, _, resp = request(addr, "POST", "/models/digits/score", b'{"data": [1]}')
    assert status == 400, resp
    after, _ = scrape(addr)

    def grew(**labels):
        name = "scoria_requests_total"
        return value(after, name, **labels) - value(before, name, **labels)

    score = dict(model="digits", version="1", route="/models/{model}/score")
    assert grew(outcome="success", **score) == 2
    assert grew(outcome="client_error", **score) == 1
    assert grew(outcome="success", model="digits", version="1", route="/score") == 1


# --------------------------------------------------------------------------- /swagger.json

@pytest.fixture(scope="module")
def swagger(server):
    status, headers, body = request(server, "GET", "/swagger.json")
    assert status == 200, body[:300]
    assert headers.get("content-type", "").startswith("application/json"), headers
    return json.loads(body)


def test_swagger_is_valid_openapi3(swagger):
    assert swagger["openapi"].startswith("3."), swagger["openapi"]
    validate(swagger)  # raises OpenAPIValidationError with the offending path


def test_swagger_lists_the_routes(swagger):
    paths = swagger["paths"]
    for path, method in [
        ("/", "get"),
        ("/score", "post"),
        ("/models/{model}/score", "post"),
        ("/v2/models/{model}/infer", "post"),
        ("/v2/models/{model}/versions/{version}/infer", "post"),
        ("/v2/health/live", "get"),
        ("/metrics", "get"),
    ]:
        assert path in paths, f"{path} missing from {sorted(paths)}"
        assert method in paths[path], (path, sorted(paths[path]))
    versioned = paths["/v2/models/{model}/versions/{version}/infer"]["post"]
    names = [(p["name"], p["in"]) for p in versioned["parameters"]]
    assert ("model", "path") in names and ("version", "path") in names, names
    ids = [op["operationId"] for item in paths.values() for op in item.values()
           if isinstance(op, dict) and "operationId" in op]
    assert len(ids) == len(set(ids)), sorted(ids)


def resolve_ref(doc, ref):
    assert ref.startswith("#/"), ref
    node = doc
    for part in ref[2:].split("/"):
        node = node[part]
    return node


@pytest.mark.parametrize("path", ["/v2/models/{model}/infer",
                                  "/v2/models/{model}/versions/{version}/infer"])
def test_swagger_infer_uses_the_inference_request_schema(swagger, path):
    op = swagger["paths"][path]["post"]
    schema = op["requestBody"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/InferenceRequest"}, schema
    request_schema = resolve_ref(swagger, schema["$ref"])
    assert {"inputs"} <= set(request_schema.get("required", [])), request_schema
    inputs = request_schema["properties"]["inputs"]
    item = resolve_ref(swagger, inputs["items"]["$ref"])
    assert {"name", "shape", "datatype"} <= set(item["required"]), item
    ok = op["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok == {"$ref": "#/components/schemas/InferenceResponse"}, ok
    for status in ("400", "404", "503"):
        err = op["responses"][status]["content"]["application/json"]["schema"]
        assert resolve_ref(swagger, err["$ref"])["required"] == ["error"], (status, err)


# --------------------------------------------------------------------------- GET /

def test_root_is_healthy(server):
    status, headers, body = request(server, "GET", "/")
    assert (status, body) == (200, b"Healthy"), (status, body)
    assert headers.get("content-type", "").startswith("text/plain"), headers
