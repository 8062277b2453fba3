#!/usr/bin/env python3
"""Writes the hand-made seeds of every fuzz target into fuzz/corpus/<target>/seed-*.

Run from the repository root (python3 fuzz/seeds.py); idempotent. Inputs that fuzzing finds
worth keeping are merged next to these by scripts/fuzz (libFuzzer -merge=1)."""
import gzip, json, os, struct, zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "fuzz", "corpus")


def write(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def j(v):
    return json.dumps(v, separators=(",", ":")).encode()


# --- v2 JSON requests -------------------------------------------------------------------
V2 = {
    "fp32_flat": {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [0.5, 1, -2.25, 3e38]}]},
    "fp32_nested": {"id": "req-1", "inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 2], "data": [[1, 2], [3, 4]]}],
                    "outputs": [{"name": "label"}, {"name": "probabilities", "parameters": {"binary_data": True}}]},
    "all_types": {"inputs": [
        {"name": "b", "datatype": "BOOL", "shape": [2], "data": [True, False]},
        {"name": "u8", "datatype": "UINT8", "shape": [2], "data": [0, 255]},
        {"name": "u16", "datatype": "UINT16", "shape": [1], "data": [65535]},
        {"name": "u32", "datatype": "UINT32", "shape": [1], "data": [4294967295]},
        {"name": "u64", "datatype": "UINT64", "shape": [1], "data": [18446744073709551615]},
        {"name": "i8", "datatype": "INT8", "shape": [1], "data": [-128]},
        {"name": "i16", "datatype": "INT16", "shape": [1], "data": [-32768]},
        {"name": "i32", "datatype": "INT32", "shape": [1], "data": [-2147483648]},
        {"name": "i64", "datatype": "INT64", "shape": [1], "data": [-9223372036854775808]},
        {"name": "f64", "datatype": "FP64", "shape": [1], "data": [1.7976931348623157e308]},
        {"name": "s", "datatype": "BYTES", "shape": [2], "data": ["héllo", ""]},
    ]},
    "params": {"id": "7", "parameters": {"priority": 2, "timeout": 1000, "binary_data_output": True},
               "inputs": [{"name": "x", "datatype": "INT64", "shape": [], "data": [3]}]},
    "empty": {"inputs": []},
    "zero_dim": {"inputs": [{"name": "x", "datatype": "FP32", "shape": [0, 64], "data": []}]},
}
for k, v in V2.items():
    write("v2_json", k, j(v))
write("v2_json", "bad_shape", b'{"inputs":[{"name":"x","datatype":"FP32","shape":[-1],"data":[1]}]}')
write("v2_json", "dup_key", b'{"inputs":[],"inputs":[]}')

# --- binary extension: header length '\n' JSON header + raw parts ------------------------
def binary(inputs, raw, extra=None):
    head = {"inputs": inputs}
    if extra:
        head.update(extra)
    h = j(head)
    return str(len(h)).encode() + b"\n" + h + raw

write("v2_binary", "fp32", binary([{"name": "input", "datatype": "FP32", "shape": [1, 2], "parameters": {"binary_data_size": 8}}],
                                   struct.pack("<2f", 1.5, -2.0), {"parameters": {"binary_data_output": True}}))
write("v2_binary", "bytes", binary([{"name": "s", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": 11}}],
                                    struct.pack("<I", 3) + b"abc" + struct.pack("<I", 0)))
write("v2_binary", "bool_i64", binary([
    {"name": "b", "datatype": "BOOL", "shape": [3], "parameters": {"binary_data_size": 3}},
    {"name": "i", "datatype": "INT64", "shape": [1], "parameters": {"binary_data_size": 8}},
    {"name": "j", "datatype": "INT32", "shape": [1], "data": [5]}], b"\x01\x00\x02" + struct.pack("<q", -5)))
write("v2_binary", "mixed_types", binary([
    {"name": "a", "datatype": t, "shape": [1], "parameters": {"binary_data_size": n}}
    for t, n in [("UINT8", 1), ("INT8", 1), ("UINT16", 2), ("INT16", 2), ("UINT32", 4), ("FP64", 8), ("UINT64", 8)]],
    bytes(range(1, 27))))
write("v2_binary", "short", b"10\n{\"inputs\":[]}")
write("v2_binary", "json_only", b"14\n" + b'{"inputs":[]}' + b" ")

# --- compressed bodies: byte 0 even gzip, odd deflate --------------------------------------
for k in ["fp32_flat", "all_types", "params"]:
    write("http_body", "gzip_" + k, b"\x00" + gzip.compress(j(V2[k]), mtime=0))
    write("http_body", "deflate_" + k, b"\x01" + zlib.compress(j(V2[k])))
write("http_body", "gzip_multi", b"\x00" + gzip.compress(b'{"inputs":', mtime=0) + gzip.compress(b"[]}", mtime=0))
write("http_body", "gzip_bomb", b"\x00" + gzip.compress(b"\x00" * (2 << 20), mtime=0))

# --- config.toml ---------------------------------------------------------------------------
for m in ["digits", "lenet", "resnet"]:
    write("config_toml", m, open(os.path.join(ROOT, "models", m, "config.toml"), "rb").read())
write("config_toml", "full", '''backend = "ort"
max_batch_size = 8
instances = 2
hook = "score.rhai"
description = "all keys"

[dynamic_batching]
max_queue_delay_us = 500
preferred_batch_size = [4, 8]
max_queue_size = 64
priority_levels = 2
default_priority_level = 1

[dynamic_batching.default_queue_policy]
timeout_action = "delay"
default_timeout_microseconds = 1000
allow_timeout_override = true
max_queue_size = 10

[version_policy]
specific = [1, 3]

[ort]
intra_op_threads = 1
inter_op_threads = 2
graph_optimization_level = "all"

[opencl]
device = "gpu"
platform = "Portable Computing Language"
binary = "kernels.aocx"
fallback = false
cpu_backend = "ort"

[[input]]
name = "input"
datatype = "FP32"
dims = [-1, 64]

[[output]]
name = "label"
dims = [-1]

[tags]
a = "b"
''')
write("config_toml", "latest", '[version_policy]\nlatest = 2\n')
write("config_toml", "all", '[version_policy]\nall = true\nmax_batch_size = 0\n')
write("config_toml", "bad", 'backend = "tpu"\n')

# --- meta.toml -----------------------------------------------------------------------------
write("meta_toml", "full", '''sha256 = "%s"
size = 19794
created = "2026-01-02T03:04:05Z"
source = "/tmp/model.onnx"
description = "digits \\"v2\\""
hook = "score.rhai"
hook_sha256 = "%s"

[tags]
stage = "prod"
"with space" = "x"
''' % ("ab" * 32, "cd" * 32))
write("meta_toml", "minimal", 'sha256 = ""\nsize = 0\ncreated = ""\nsource = ""\n')

# --- MQTT requests -------------------------------------------------------------------------
write("mqtt_request", "data", j({"id": 7, "data": [[0.0] * 64]}))
write("mqtt_request", "inputs", j({"id": "a-1", "inputs": {"image": [[[1, 2], [3, 4]]], "text": ["x"]}}))
write("mqtt_request", "flat", j({"data": list(range(128))}))
write("mqtt_request", "dup", b'{"id": {"n": [1, 2]}, "duplicate": true, "data": [1]}')
write("mqtt_request", "leading_id", b'  { "id" : "x\\"y" , "data": [1, 2]')
write("mqtt_request", "scalar", b'[1, 2]')

# --- desired configuration -----------------------------------------------------------------
for i, doc in enumerate([
    b'{"$version": 4, "telemetry_interval_s": 5, "models": {"digits": {"version": 2}}}',
    b'{"models": {"digits": {"version": "latest"}, "lenet": {"version": null}}}',
    b'{"models": {"digits": {"thresholds": {"probability": {"below": 0.6}, "score": {"above": 0.9, "below": 0.1}}}}}',
    b'{"models": {"digits": {"thresholds": null}}}',
    b'{"telemetry_interval_s": 0.1}',
    b'{"telemetry_interval_s": 5, "models": {"nope": {"version": 1}}}',
    b'{"models": {"digits": {"version": -1}}}',
    b'{"colour": "red", "$metadata": {}}',
]):
    write("mqtt_desired", "doc%d" % i, doc)

# --- IoT Hub topic '\n' payload ------------------------------------------------------------
write("iothub", "method", b'$iothub/methods/POST/score/?$rid=42\n{"model": "digits", "id": 1, "data": [1, 2]}')
write("iothub", "method_only", b'$iothub/methods/POST/score/?$rid=1\n{"data": [[0.5]]}')
write("iothub", "method_unknown", b'$iothub/methods/POST/reboot/?$rid=2\n{}')
write("iothub", "patch", b'$iothub/twin/PATCH/properties/desired/?$version=12\n{"$version": 12, "telemetry_interval_s": 30}')
write("iothub", "twin", b'$iothub/twin/res/200/?$rid=scoria-twin-get\n{"desired": {"$version": 3, "models": {"digits": {"version": 1}}}, "reported": {"$version": 1}}')
write("iothub", "twin_err", b'$iothub/twin/res/404/?$rid=scoria-twin-get\n{}')
write("iothub", "input", b'devices/edge-1/modules/scoria/inputs/digits/%24.ct=application%2Fjson\n{"id": 1, "data": [1]}')

# --- hook conversions: byte 0 (low nibble type, high nibble shape) then JSON ---------------
for i, (b, doc) in enumerate([
    (9, [[0.1, 0.2], [0.3, 0.4]]),
    (10, [1e308, -1e-308, 0.5]),
    (8, [[1, -2, 3]]),
    (4, [18446744073709551615, 1]),
    (0, [True, False, 1, 0]),
    (11, ["a", "bé", ""]),
    (1, [[[255]]]),
    (0x89, [1, 2, 3, 4]),
    (0xF3, [[1, 2], [3, 4], [5, 6], [7, 8]]),
    (9, 3.5),
    (9, [[1], [2, 3]]),
    (5, {"a": [1, {"b": None}]}),
]):
    write("hook_tensors", "case%d" % i, bytes([b]) + j(doc))

# --- ONNX models: the small fixtures and sample models -------------------------------------
onnx = {
    "add_fixed": "tests/fixtures/models/add_fixed/1/model.onnx",
    "identity_bytes": "tests/fixtures/models/identity_bytes/1/model.onnx",
    "identity_all": "tests/fixtures/models/identity_all/1/model.onnx",
    "digits": "models/digits/1/model.onnx",
}
for t in ["onnx_tract", "onnx_ort", "onnx_opencl"]:
    for k, p in onnx.items():
        write(t, k, open(os.path.join(ROOT, p), "rb").read())
# LeNet (0.25 MB) brings convolutions and pooling to the importers that partition them.
write("onnx_opencl", "lenet", open(os.path.join(ROOT, "models/lenet/1/model.onnx"), "rb").read())
