"""Every object under deploy/ validates as the API server would take it (see manifests.py),
the Helm chart renders with default and with full values through Helm's own engine (Helm v4's
Go SDK in the helm-python-sdk wheel) into valid objects, and nonsense is refused."""

import copy

import helm_python as helm
import pytest

from conftest import CHART, DEPLOY, KSERVE
from manifests import Invalid, check_model_format, load_all, validate

FULL_VALUES = {
    "replicaCount": 3,
    "image": {"repository": "registry.example/scoria", "tag": "0.1.0-ort", "pullPolicy": "Always"},
    "backend": "ort",
    "drainTimeoutSeconds": 45,
    "preStopSleepSeconds": 10,
    "models": {
        "persistentVolumeClaim": "scoria-models",
        "subPath": "repository",
        "configs": {
            "digits": 'max_batch_size = 8\n[dynamic_batching]\nmax_queue_delay_us = 200\n',
            "resnet": 'backend = "tract"\ninstances = 2\n',
        },
    },
    "apiKeys": {"keys": ["k" * 32 + " admin", "s" * 32 + " score"]},
    "service": {"type": "LoadBalancer", "port": 80},
    "resources": {"requests": {"cpu": "500m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
    "podDisruptionBudget": {"enabled": True, "minAvailable": "50%"},
    "autoscaling": {
        "enabled": True,
        "minReplicas": 2,
        "maxReplicas": 8,
        "targetCPUUtilizationPercentage": 60,
        "targetPendingRequests": 4,
    },
    "serviceMonitor": {"enabled": True, "interval": "30s"},
    "podAnnotations": {"team": "ml"},
    "nodeSelector": {"kubernetes.io/arch": "amd64"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}],
    "affinity": {},
}


def kserve_objects():
    objs = []
    for path in sorted((DEPLOY / "kserve").glob("*.yaml")):
        objs += [(path.name, o) for o in load_all(path.read_text())]
    return objs


def render(values):
    with helm.Chart.load(str(CHART)) as chart:
        out = chart.render(values, name="scoria", namespace="ml")
    objs = []
    for text in out.values():
        objs += load_all(text)
    return objs


def by_kind(objs, kind):
    return [o for o in objs if o["kind"] == kind]


def test_kserve_reference_files_are_there():
    # The CRDs come from ../shared/kserve; without them nothing below would mean anything.
    assert (KSERVE / "serving.kserve.io_servingruntimes.yaml").is_file()


def test_every_object_under_deploy_kserve_validates():
    objs = kserve_objects()
    kinds = sorted({o["kind"] for _, o in objs})
    assert kinds == ["ClusterServingRuntime", "InferenceService", "ServingRuntime"], kinds
    for name, o in objs:
        try:
            validate(o)
        except Invalid as e:
            pytest.fail(f"{name}: {e}")


def test_runtimes_follow_kserves_triton_runtime():
    runtimes = [o for _, o in kserve_objects() if o["kind"].endswith("ServingRuntime")]
    assert len(runtimes) == 2
    for r in runtimes:
        spec = r["spec"]
        assert {"name": "onnx", "version": "1", "autoSelect": True, "priority": 2} in spec[
            "supportedModelFormats"
        ]
        assert spec["protocolVersions"] == ["v2", "grpc-v2"]
        assert spec["annotations"]["prometheus.kserve.io/port"] == "8080"
        assert spec["annotations"]["prometheus.kserve.io/path"] == "/metrics"
        (c,) = spec["containers"]
        assert c["name"] == "kserve-container"
        args = c["args"]
        assert args[0] == "serve"
        assert args[args.index("--models") + 1] == "/mnt/models"
        assert args[args.index("--http") + 1] == "0.0.0.0:8080"
        assert args[args.index("--grpc") + 1] == "0.0.0.0:9000"
        assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
        assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
        sc = c["securityContext"]
        assert sc["runAsNonRoot"] and sc["runAsUser"] == 1000
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        # A read-only root needs a writable /tmp (XDG_CACHE_HOME).
        assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]


def test_the_inference_service_lands_on_a_scoria_runtime():
    objs = [o for _, o in kserve_objects()]
    runtimes = [o for o in objs if o["kind"].endswith("ServingRuntime")]
    services = by_kind(objs, "InferenceService")
    assert services
    for isvc in services:
        check_model_format(isvc, runtimes)


def test_chart_renders_valid_objects_with_default_values():
    objs = render({})
    kinds = sorted(o["kind"] for o in objs)
    assert kinds == ["Deployment", "PodDisruptionBudget", "Service"], kinds
    for o in objs:
        validate(o)
    (d,) = by_kind(objs, "Deployment")
    pod = d["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    drain = c["args"][c["args"].index("--drain-timeout") + 1]
    assert drain == "30s"
    assert pod["terminationGracePeriodSeconds"] >= 30 + 5
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert "--api-key-file" not in c["args"]


def test_chart_renders_valid_objects_with_full_values():
    objs = render(FULL_VALUES)
    kinds = sorted(o["kind"] for o in objs)
    assert kinds == [
        "ConfigMap",
        "Deployment",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "Secret",
        "Service",
        "ServiceMonitor",
    ], kinds
    for o in objs:
        validate(o)
    (d,) = by_kind(objs, "Deployment")
    assert "replicas" not in d["spec"], "the HPA owns replicas"
    pod = d["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    args = c["args"]
    assert args[args.index("--backend") + 1] == "ort"
    assert pod["terminationGracePeriodSeconds"] >= 10 + 45
    assert args[args.index("--api-key-file") + 1] == "/etc/scoria/keys/keys.txt"
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert mounts["/models/digits/config.toml"]["subPath"] == "digits.toml"
    assert mounts["/models"]["readOnly"] is True
    (cm,) = by_kind(objs, "ConfigMap")
    assert "max_queue_delay_us = 200" in cm["data"]["digits.toml"]
    (secret,) = by_kind(objs, "Secret")
    assert secret["stringData"]["keys.txt"].splitlines() == FULL_VALUES["apiKeys"]["keys"]
    (hpa,) = by_kind(objs, "HorizontalPodAutoscaler")
    metrics = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert metrics["Resource"]["resource"]["target"]["averageUtilization"] == 60
    assert metrics["Pods"]["pods"]["metric"]["name"] == "scoria_pending_requests"
    (sm,) = by_kind(objs, "ServiceMonitor")
    assert sm["spec"]["endpoints"][0]["path"] == "/metrics"


@pytest.mark.parametrize(
    "change, why",
    [
        ({"replicaCount": -1}, "minimum"),
        ({"backend": "onnx-magic"}, "backend"),
        ({"drainTimeoutSeconds": "30s"}, "drainTimeoutSeconds"),
        ({"replicaz": 2}, "replicaz"),
        ({"apiKeys": {"keys": ["short"]}}, "keys"),
        ({"models": {"configs": {"../etc": "x = 1"}}}, "configs"),
        ({"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 2}}, "minReplicas"),
    ],
)
def test_chart_refuses_values_that_make_no_sense(change, why):
    values = copy.deepcopy(FULL_VALUES)
    values.update(change)
    with pytest.raises(Exception) as e:
        render(values)
    assert why in str(e.value) or "schema" in str(e.value).lower(), str(e.value)


def test_validation_catches_broken_manifests():
    objs = {o["kind"]: o for _, o in kserve_objects()}
    runtimes = [o for k, o in objs.items() if k.endswith("ServingRuntime")]

    def broken(kind, edit):
        o = copy.deepcopy(objs[kind])
        edit(o)
        return o

    cases = {
        # negative replicas
        "minReplicas -1": broken("InferenceService", lambda o: o["spec"]["predictor"].update(minReplicas=-1)),
        # a field the API server would prune (misspelt)
        "unknown runtime field": broken(
            "ServingRuntime", lambda o: o["spec"]["containers"][0].update(imagePullPolicyy="Always")
        ),
        "unknown top-level spec field": broken("ClusterServingRuntime", lambda o: o["spec"].update(replicas_max=3)),
        # a wrong type
        "protocolVersions not a list": broken("ServingRuntime", lambda o: o["spec"].update(protocolVersions="v2")),
        "port as a word": broken(
            "ServingRuntime",
            lambda o: o["spec"]["containers"][0]["readinessProbe"]["httpGet"].update(port=[8080]),
        ),
    }
    for what, o in cases.items():
        with pytest.raises(Invalid):
            validate(o)
            pytest.fail(f"{what}: accepted")
    # An unknown model format validates against the CRD but lands on no runtime.
    isvc = broken(
        "InferenceService",
        lambda o: o["spec"]["predictor"]["model"]["modelFormat"].update(name="tensorflow-lite"),
    )
    validate(isvc)
    with pytest.raises(Invalid, match="tensorflow-lite"):
        check_model_format(isvc, runtimes)
    # Built-in kinds: strict Kubernetes schemas, and no negative replicas.
    (d,) = by_kind(render({}), "Deployment")
    for edit in (
        lambda o: o["spec"].update(replicas=-2),
        lambda o: o["spec"]["template"]["spec"]["containers"][0].update(readinesProbe={}),
        lambda o: o["spec"].update(replicas="two"),
    ):
        bad = copy.deepcopy(d)
        edit(bad)
        with pytest.raises(Invalid):
            validate(bad)
