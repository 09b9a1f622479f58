"""Acceptance: kubectl against the kubeconfig k8semu writes."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.k8semu import K8sEmu

pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not on PATH")


@pytest.fixture
def kubectl(k8s_emu_kuberay: K8sEmu, tmp_path: Path):
    def run(*args: str, check: bool = True, emu: K8sEmu | None = None) -> subprocess.CompletedProcess[str]:
        e = emu or k8s_emu_kuberay
        env = {**os.environ, "KUBECONFIG": str(e.kubeconfig_path)}
        p = subprocess.run(
            ["kubectl", "--cache-dir", str(tmp_path / "cache"), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check and p.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
        return p

    return run


def pod(name: str, ns: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }


def test_get_pods_get_yaml_delete(kubectl: Any, k8s_emu_kuberay: K8sEmu) -> None:
    emu = k8s_emu_kuberay
    emu.create_object(pod("alpha", "ns-a"))
    emu.create_object(pod("beta", "ns-b"))
    emu.wait_for(lambda: all(p["status"].get("phase") == "Running" for p in emu.list_objects("pods")))
    out = kubectl("get", "pods", "-A").stdout
    assert "alpha" in out and "beta" in out and "ns-a" in out and "ns-b" in out
    assert "Running" in out
    doc = yaml.safe_load(kubectl("get", "pod", "alpha", "-n", "ns-a", "-o", "yaml").stdout)
    assert doc["kind"] == "Pod" and doc["metadata"]["name"] == "alpha" and doc["status"]["phase"] == "Running"
    assert doc["status"]["podIP"].startswith("127.244.")
    out = kubectl("delete", "pod", "alpha", "-n", "ns-a").stdout
    assert 'pod "alpha" deleted' in out
    assert emu.get_object("pods", "ns-a", "alpha") is None
    p = kubectl("get", "pod", "alpha", "-n", "ns-a", check=False)
    assert p.returncode != 0 and 'pods "alpha" not found' in p.stderr


def test_get_rayclusters_with_and_without_kuberay(kubectl: Any, k8s_emu_kuberay: K8sEmu, k8s_emu: K8sEmu) -> None:
    k8s_emu_kuberay.create_object(
        {
            "apiVersion": "ray.io/v1",
            "kind": "RayCluster",
            "metadata": {"name": "rc1", "namespace": "default"},
            "spec": {
                "headGroupSpec": {
                    "template": {"spec": {"containers": [{"name": "ray-head", "image": "rayproject/ray"}]}}
                }
            },
        }
    )
    out = kubectl("get", "rayclusters").stdout
    assert "rc1" in out
    doc = yaml.safe_load(kubectl("get", "raycluster", "rc1", "-o", "yaml").stdout)
    assert doc["apiVersion"] == "ray.io/v1"
    p = kubectl("get", "rayclusters", check=False, emu=k8s_emu)
    assert p.returncode != 0 and 'the server doesn\'t have a resource type "rayclusters"' in p.stderr


MANIFEST = """
apiVersion: v1
kind: ConfigMap
metadata: {name: cfg, namespace: applied, labels: {a: b}}
data: {k: v1}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: applied}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: c
        image: nginx
        env: [{name: A, value: "1"}]
---
apiVersion: ray.io/v1
kind: RayCluster
metadata: {name: rc, namespace: applied}
spec:
  headGroupSpec:
    rayStartParams: {}
    template:
      spec:
        containers: [{name: ray-head, image: rayproject/ray}]
  workerGroupSpecs:
  - groupName: w
    replicas: 1
    rayStartParams: {}
    template:
      spec:
        containers: [{name: ray-worker, image: rayproject/ray}]
"""


def test_apply(kubectl: Any, k8s_emu_kuberay: K8sEmu, tmp_path: Path) -> None:
    emu = k8s_emu_kuberay
    f = tmp_path / "m.yaml"
    f.write_text(MANIFEST)
    out = kubectl("apply", "-f", str(f)).stdout
    assert "configmap/cfg created" in out and "deployment.apps/web created" in out
    assert "raycluster.ray.io/rc created" in out
    cm = emu.get_object("configmaps", "applied", "cfg")
    assert "kubectl.kubernetes.io/last-applied-configuration" in cm["metadata"]["annotations"]
    emu.wait_for(lambda: len(emu.list_objects("pods", "applied", label_selector="app=web")) == 1)
    # re-apply with changes: strategic merge patch (built-ins) / merge patch (CRD)
    f.write_text(
        MANIFEST.replace("k: v1", "k: v2")
        .replace("replicas: 1\n  selector", "replicas: 2\n  selector")
        .replace("    replicas: 1\n    rayStartParams", "    replicas: 2\n    rayStartParams")
    )
    out = kubectl("apply", "-f", str(f)).stdout
    assert "configmap/cfg configured" in out and "deployment.apps/web configured" in out
    assert "raycluster.ray.io/rc configured" in out
    assert emu.get_object("configmaps", "applied", "cfg")["data"] == {"k": "v2"}
    assert emu.get_object("deployments", "applied", "web")["spec"]["replicas"] == 2
    assert emu.get_object("rayclusters", "applied", "rc")["spec"]["workerGroupSpecs"][0]["replicas"] == 2
    emu.wait_for(lambda: len(emu.list_objects("pods", "applied", label_selector="app=web")) == 2)
    assert any(v == "patch" and r == "deployments" for v, r, _, _ in emu.request_log)
    out = kubectl("apply", "-f", str(f)).stdout
    assert "configmap/cfg unchanged" in out
    # server-side apply
    f.write_text(MANIFEST.split("---")[0].replace("k: v1", "k: v3"))
    kubectl("apply", "--server-side", "-f", str(f))
    assert emu.get_object("configmaps", "applied", "cfg")["data"] == {"k": "v3"}
