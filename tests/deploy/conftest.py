"""Shared setup of the deployment suite (tests/deploy): paths, and the Kubernetes version the
manifests are checked against."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
# KServe's CRDs and Triton runtime: ../shared beside the checkout (CI lays a copy there).
KSERVE = REPO.parent / "shared" / "kserve"
CHART = DEPLOY / "helm" / "scoria"
