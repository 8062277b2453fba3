"""Validation of Kubernetes objects as an API server would take them, offline:

- KServe kinds against the CustomResourceDefinitions in ../shared/kserve/, their OpenAPI v3
  schemas turned into JSON Schema. Fields the API server would prune (any field not declared
  where x-kubernetes-preserve-unknown-fields is absent) are errors here.
- Built-in kinds against kubernetes-validate's JSON schemas of Kubernetes, strict (unknown
  fields are errors).
- ServiceMonitor (prometheus-operator, no schema shipped here) against the subset of its CRD
  the chart uses, strict as well.
- On every kind: replica counts are not negative (the OpenAPI schemas of Deployment and
  InferenceService leave int32 unbounded; the API server's own validation refuses them).
"""

import copy

import jsonschema
import kubernetes_validate
import yaml

from conftest import KSERVE

K8S_VERSION = "1.33.0"
REPLICA_FIELDS = {"replicas", "minReplicas", "maxReplicas", "minAvailable"}


class Invalid(Exception):
    pass


def _crd_to_json_schema(node, root=True):
    """OpenAPI v3 (structural CRD schema) -> JSON Schema, with pruned fields as errors."""
    if not isinstance(node, dict):
        return node
    out = {}
    for k, v in node.items():
        if k == "properties":
            out[k] = {name: _crd_to_json_schema(s, False) for name, s in v.items()}
        elif k in ("items", "additionalProperties", "not") and isinstance(v, dict):
            out[k] = _crd_to_json_schema(v, False)
        elif k in ("allOf", "anyOf", "oneOf"):
            out[k] = [_crd_to_json_schema(s, False) for s in v]
        else:
            out[k] = v
    if out.pop("x-kubernetes-int-or-string", False):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [out["type"], "null"]
    preserve = out.pop("x-kubernetes-preserve-unknown-fields", False)
    if out.get("type") == "object" and not preserve and "additionalProperties" not in out:
        out["additionalProperties"] = False
    if root:
        # ObjectMeta is the API server's, not the CRD's: any metadata the server takes.
        props = out.setdefault("properties", {})
        props["metadata"] = {"type": "object"}
    return out


def _crd_schemas():
    schemas = {}
    for path in sorted(KSERVE.glob("serving.kserve.io_*.yaml")):
        crd = yaml.safe_load(path.read_text())
        kind = crd["spec"]["names"]["kind"]
        for v in crd["spec"]["versions"]:
            api = f"{crd['spec']['group']}/{v['name']}"
            schema = _crd_to_json_schema(copy.deepcopy(v["schema"]["openAPIV3Schema"]))
            schemas[(api, kind)] = schema
    if not schemas:
        raise RuntimeError(f"no KServe CRDs in {KSERVE} (../shared/kserve beside the repository)")
    return schemas


CRDS = _crd_schemas()

SERVICE_MONITOR = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {"type": "object"},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["selector", "endpoints"],
            "properties": {
                "selector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}}
                    },
                },
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string"},
                            "interval": {"type": "string", "pattern": "^(0|(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"},
                            "scheme": {"enum": ["http", "https"]},
                        },
                    },
                },
            },
        },
    },
}


def _negative_counts(node, path=""):
    if isinstance(node, dict):
        for k, v in node.items():
            here = f"{path}.{k}" if path else k
            if k in REPLICA_FIELDS and isinstance(v, int) and not isinstance(v, bool) and v < 0:
                yield f"{here}: {v} is negative"
            yield from _negative_counts(v, here)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _negative_counts(v, f"{path}[{i}]")


def validate(obj):
    """Raises Invalid naming the object and the first problem."""
    if not isinstance(obj, dict) or "kind" not in obj or "apiVersion" not in obj:
        raise Invalid(f"not a Kubernetes object: {obj!r:.80}")
    name = f"{obj['kind']} {obj.get('metadata', {}).get('name', '?')}"
    for problem in _negative_counts(obj):
        raise Invalid(f"{name}: {problem}")
    key = (obj["apiVersion"], obj["kind"])
    try:
        if key in CRDS:
            jsonschema.validate(obj, CRDS[key])
        elif obj["kind"] == "ServiceMonitor":
            jsonschema.validate(obj, SERVICE_MONITOR)
        elif obj["apiVersion"].startswith("serving.kserve.io/"):
            raise Invalid(f"{name}: no KServe CRD for {key}")
        else:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    except jsonschema.ValidationError as e:
        where = ".".join(str(p) for p in e.absolute_path)
        raise Invalid(f"{name}: {where}: {e.message}") from None
    except kubernetes_validate.ValidationError as e:
        where = ".".join(str(p) for p in e.path)
        raise Invalid(f"{name}: {where}: {e.message}") from None
    except kubernetes_validate.utils.SchemaNotFoundError as e:
        raise Invalid(f"{name}: no schema: {e}") from None


def load_all(text):
    return [d for d in yaml.safe_load_all(text) if d is not None]


def check_model_format(isvc, runtimes):
    """KServe places an InferenceService on a runtime that supports its model format (the
    runtime it names, else one with autoSelect); none: the service never becomes ready."""
    model = isvc["spec"]["predictor"].get("model")
    if model is None:
        return
    fmt = model["modelFormat"]["name"]
    named = model.get("runtime")
    candidates = [
        r
        for r in runtimes
        if (r["metadata"]["name"] == named if named else True)
    ]
    if named and not candidates:
        raise Invalid(f"InferenceService {isvc['metadata']['name']}: no runtime named {named}")
    for r in candidates:
        for f in r["spec"]["supportedModelFormats"]:
            if f["name"] == fmt and (named or f.get("autoSelect")):
                proto = model.get("protocolVersion", "v1")
                if proto not in r["spec"].get("protocolVersions", ["v1"]):
                    raise Invalid(f"runtime {r['metadata']['name']} does not speak {proto}")
                return
    raise Invalid(
        f"InferenceService {isvc['metadata']['name']}: model format {fmt!r} is supported by "
        f"no runtime here ({sorted({f['name'] for r in runtimes for f in r['spec']['supportedModelFormats']})})"
    )
