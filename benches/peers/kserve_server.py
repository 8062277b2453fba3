"""KServe's Python model server serving scoria's sample models through onnxruntime: the peer
that `scripts/bench-peers` measures scoria against.

    .venv-peers/bin/python benches/peers/kserve_server.py --models-dir models \
        --model digits --model lenet --port 9001

Each model is a `kserve.Model` whose `load()` opens `<models-dir>/<name>/<N>/model.onnx` (the
highest numbered version N) in an `onnxruntime.InferenceSession` on the CPU execution provider,
with ONNX Runtime's default thread settings unless `--intra-op-threads`/`--inter-op-threads`
are given (scoria's ort engine uses the same defaults when `[ort]` names none). `predict`
is a plain (synchronous) method, the pattern of KServe's own model servers (sklearn,
xgboost, lightgbm): it runs the session and answers every output, or those the request
names, in binary or JSON as the request asks (the v2 binary tensor extension is KServe's).

Changes to a stock `ModelServer`, all needed for a fair, local, perf_analyzer run:
- the REST server binds 127.0.0.1 (KServe hard-codes 0.0.0.0) and gRPC is off;
- `GET /v2/models/{m}/config` answers a Triton-style model configuration (perf_analyzer
  reads it before measuring; KServe has no such route);
- per-request log lines (KServe's latency log, its timing middleware's `kserve.trace` lines
  and uvicorn's access log) are off unless `--request-logs` is given, so the peer is not
  slowed by writing lines per request.
One uvicorn worker (KServe's default), uvloop when installed (KServe's `auto`). Everything
else is KServe's own path, including its v2 decoder, which turns a binary input tensor into
a Python list element by element (`InferRequest.from_bytes` calls
`set_data_from_numpy(..., binary_data=False)`): about 130 ms for a 1×3×224×224 FP32 input
on this project's 2-core machine, more than the ResNet sample's inference itself.
"""

import argparse
import importlib.metadata
import logging
import os
import sys
from pathlib import Path

ONNX_TO_V2 = {
    "tensor(float)": "FP32", "tensor(double)": "FP64", "tensor(float16)": "FP16",
    "tensor(int8)": "INT8", "tensor(int16)": "INT16", "tensor(int32)": "INT32",
    "tensor(int64)": "INT64", "tensor(uint8)": "UINT8", "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32", "tensor(uint64)": "UINT64", "tensor(bool)": "BOOL",
    "tensor(string)": "BYTES",
}


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models-dir", required=True, type=Path)
    p.add_argument("--model", action="append", required=True,
                   help="model to serve (repeat, or comma-separated)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--intra-op-threads", type=int, default=0,
                   help="ONNX Runtime intra-op threads (0: ONNX Runtime's default)")
    p.add_argument("--inter-op-threads", type=int, default=0,
                   help="ONNX Runtime inter-op threads (0: ONNX Runtime's default)")
    p.add_argument("--request-logs", action="store_true",
                   help="keep KServe's per-request latency log and uvicorn's access log")
    return p.parse_args()


ARGS = parse_args()
# kserve parses sys.argv when it is imported; give it none of ours.
sys.argv = sys.argv[:1]

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
from fastapi.responses import JSONResponse  # noqa: E402

import kserve  # noqa: E402
import kserve.model_server as kms  # noqa: E402
from kserve import InferOutput, InferRequest, InferResponse  # noqa: E402
from kserve.errors import InvalidInput  # noqa: E402
from kserve.utils.utils import from_np_dtype  # noqa: E402


def latest_version(model_dir: Path) -> Path:
    versions = sorted((int(d.name) for d in model_dir.iterdir()
                       if d.is_dir() and d.name.isdigit() and (d / "model.onnx").is_file()))
    if not versions:
        raise SystemExit(f"kserve_server: no <version>/model.onnx under {model_dir}")
    return model_dir / str(versions[-1]) / "model.onnx"


def v2_shape(shape):
    return [d if isinstance(d, int) and d >= 0 else -1 for d in shape]


class OnnxModel(kserve.Model):
    def __init__(self, name: str, path: Path):
        super().__init__(name)
        self.path = path
        self.session = None
        self.inputs = []
        self.outputs = []
        self.version = path.parent.name

    def load(self) -> bool:
        options = ort.SessionOptions()
        if ARGS.intra_op_threads:
            options.intra_op_num_threads = ARGS.intra_op_threads
        if ARGS.inter_op_threads:
            options.inter_op_num_threads = ARGS.inter_op_threads
            options.execution_mode = ort.ExecutionMode.ORT_PARALLEL
        self.session = ort.InferenceSession(str(self.path), options,
                                            providers=["CPUExecutionProvider"])
        self.inputs = [{"name": i.name, "datatype": ONNX_TO_V2.get(i.type, i.type),
                        "shape": v2_shape(i.shape)} for i in self.session.get_inputs()]
        self.outputs = [{"name": o.name, "datatype": ONNX_TO_V2.get(o.type, o.type),
                         "shape": v2_shape(o.shape)} for o in self.session.get_outputs()]
        self.ready = True
        return self.ready

    def get_input_types(self):
        return self.inputs

    def get_output_types(self):
        return self.outputs

    def triton_config(self):
        def entries(specs):
            return [{"name": s["name"], "data_type": "TYPE_" + s["datatype"].replace("BYTES", "STRING"),
                     "dims": s["shape"]} for s in specs]
        return {"name": self.name, "platform": "onnxruntime_onnx", "backend": "onnxruntime",
                "max_batch_size": 0, "input": entries(self.inputs),
                "output": entries(self.outputs)}

    def predict(self, payload: InferRequest, headers=None) -> InferResponse:
        if not isinstance(payload, InferRequest):
            raise InvalidInput("this server speaks the v2 protocol only")
        feed = {i.name: i.as_numpy() for i in payload.inputs}
        requested = payload.request_outputs
        names = [o.name for o in requested] if requested else [o["name"] for o in self.outputs]
        try:
            results = self.session.run(names, feed)
        except Exception as e:  # onnxruntime's errors are the client's (shape, dtype, name)
            raise InvalidInput(str(e)) from e
        outputs = []
        for name, array in zip(names, results):
            array = np.asarray(array)
            out = InferOutput(name=name, shape=list(array.shape),
                              datatype=from_np_dtype(array.dtype))
            out.set_data_from_numpy(array, binary_data=payload.use_binary_outputs)
            outputs.append(out)
        return InferResponse(response_id=payload.id, model_name=self.name,
                             model_version=self.version, infer_outputs=outputs,
                             use_binary_outputs=payload.use_binary_outputs,
                             requested_outputs=requested)


class LoopbackRESTServer(kms.RESTServer):
    """KServe's REST server, listening on ARGS.host instead of 0.0.0.0."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.config.host = ARGS.host


def add_config_route(models):
    def model_or_404(name):
        m = models.get(name)
        if m is None:
            return None, JSONResponse({"error": f"Model with name {name} does not exist."},
                                      status_code=404)
        return m, None

    async def config(model_name: str):
        m, err = model_or_404(model_name)
        return err or JSONResponse(m.triton_config())

    # Added before kserve registers its own routes, so these match first.
    kms.app.add_api_route("/v2/models/{model_name}/config", config, methods=["GET"])


def main():
    names = [n for arg in ARGS.model for n in arg.split(",") if n]
    models = {}
    for name in names:
        model = OnnxModel(name, latest_version(ARGS.models_dir / name))
        model.load()
        models[name] = model
    add_config_route(models)
    kms.RESTServer = LoopbackRESTServer
    server = kserve.ModelServer(http_port=ARGS.port, enable_grpc=False, workers=1,
                                enable_latency_logging=ARGS.request_logs)
    if not ARGS.request_logs:
        # uvicorn's access log and KServe's timing middleware (kserve.trace) write per request.
        for name in ("uvicorn.access", "kserve.trace"):
            logging.getLogger(name).setLevel(logging.WARNING)
    print(f"kserve_server: kserve {importlib.metadata.version('kserve')}, "
          f"onnxruntime {ort.__version__}, pid {os.getpid()}, "
          f"serving {', '.join(names)} on {ARGS.host}:{ARGS.port}", flush=True)
    server.start(list(models.values()))


if __name__ == "__main__":
    main()
