"""Kubernetes manifests: kubernetes-validate --strict on each, one kind per file, the
kustomization lists them all, and the worker's settings hold together."""
import os
from pathlib import Path

import pytest
import yaml

from conftest import REPO, run

K8S = REPO / "deploy" / "k8s"
MANIFESTS = sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def doc(name):
    return yaml.safe_load((K8S / name).read_text())


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_kubernetes_validate_strict(tools_bin, path):
    r = run([str(tools_bin / "kubernetes-validate"), "--strict", str(path)], env=os.environ.copy())
    assert r.returncode == 0 and "passed" in r.stdout + r.stderr, r.stdout + r.stderr


def test_strict_validation_rejects_an_unknown_field(tools_bin, tmp_path):
    """--strict is not a no-op: an unknown field in a Deployment fails."""
    bad = doc("deployment.yaml")
    bad["spec"]["template"]["spec"]["containers"][0]["livenessProbes"] = {}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    r = run([str(tools_bin / "kubernetes-validate"), "--strict", str(path)], env=os.environ.copy())
    assert r.returncode != 0, r.stdout + r.stderr


def test_one_kind_per_file_and_kustomization_lists_them():
    kinds = {}
    for path in MANIFESTS:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        assert len(docs) == 1, f"{path.name}: one object per file"
        kinds[docs[0]["kind"]] = path.name
        assert path.name == docs[0]["kind"].lower() + ".yaml", path.name
    assert {"Deployment", "PodDisruptionBudget", "HorizontalPodAutoscaler", "ServiceAccount"} <= set(kinds)
    k = doc("kustomization.yaml")
    assert k["kind"] == "Kustomization"
    assert sorted(k["resources"]) == sorted(p.name for p in MANIFESTS)


def test_deployment():
    d = doc("deployment.yaml")
    pod = d["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert d["spec"]["replicas"] >= 2
    assert c["resources"]["requests"] and c["resources"]["limits"]
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    shutdown = doc("configmap.yaml")["data"]["STREAM_WORKER_SHUTDOWN_TIMEOUT"]
    assert shutdown.endswith("s") and pod["terminationGracePeriodSeconds"] > int(shutdown[:-1])
    annotations = d["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/port"] == "9464"
    assert pod["serviceAccountName"] == doc("serviceaccount.yaml")["metadata"]["name"]
    # The labels the PDB, HPA and Service select are the pod's.
    labels = d["spec"]["template"]["metadata"]["labels"]
    for name in ("poddisruptionbudget.yaml", "service.yaml"):
        spec = doc(name)["spec"]
        sel = spec["selector"].get("matchLabels", spec["selector"])
        assert sel.items() <= labels.items(), name
    assert doc("horizontalpodautoscaler.yaml")["spec"]["scaleTargetRef"]["name"] == d["metadata"]["name"]


def test_irsa_service_account_is_documented():
    text = (K8S / "serviceaccount.yaml").read_text()
    assert "eks.amazonaws.com/role-arn" in doc("serviceaccount.yaml")["metadata"]["annotations"]
    assert "IRSA" in text and "OIDC" in text
