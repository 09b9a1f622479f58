"""Idle workers shrink (KubeRay) and what a cluster holds while idle (docs/cost.md).

- a profile with ``ray_worker_min_replicas`` < ``ray_worker_max_replicas`` renders a
  RayCluster with in-tree autoscaling and ``ray_autoscaler_idle_timeout_seconds`` as the
  autoscaler's ``idleTimeoutSeconds``, valid against KubeRay v1.7.0's CRD;
- autoscaling is not the default (the documented choice): a profile without min/max
  renders a fixed-size cluster;
- the pods backend runs a fixed count (``ray_worker_replicas``) whatever min/max say;
- the quota counts an autoscaling cluster at its maximum, and its idle floor is its minimum.
"""

from __future__ import annotations

from rayspawner import quotas
from rayspawner.config import RayConfig
from rayspawner.manifests import kuberay, pods

from .test_kuberay_manifests import OWNER, _spec, crd_errors, crd_validator  # noqa: F401 (fixture)

AUTOSCALING = {
    "ray_worker_replicas": 1,
    "ray_worker_min_replicas": 0,
    "ray_worker_max_replicas": 4,
    "ray_autoscaler_idle_timeout_seconds": 300,
    "ray_worker_cpu": "2",
    "ray_worker_memory": "4Gi",
}


def test_autoscaling_profile_renders_idle_timeout_and_is_valid(crd_validator) -> None:  # noqa: F811
    spec = _spec(RayConfig(**AUTOSCALING))
    rc = kuberay.raycluster(spec, OWNER)
    body = rc["spec"]
    assert body["enableInTreeAutoscaling"] is True
    assert body["autoscalerOptions"]["idleTimeoutSeconds"] == 300
    group = body["workerGroupSpecs"][0]
    assert (group["minReplicas"], group["replicas"], group["maxReplicas"]) == (0, 1, 4)
    assert crd_errors(crd_validator, rc) == []


def test_idle_timeout_default_is_what_the_docs_say() -> None:
    spec = _spec(RayConfig(ray_worker_min_replicas=0, ray_worker_max_replicas=2))
    assert kuberay.raycluster(spec, OWNER)["spec"]["autoscalerOptions"]["idleTimeoutSeconds"] == 60
    assert RayConfig().ray_autoscaler_idle_timeout_seconds == 60


def test_autoscaling_is_opt_in(crd_validator) -> None:  # noqa: F811
    spec = _spec(RayConfig(ray_worker_replicas=2))
    rc = kuberay.raycluster(spec, OWNER)
    assert not spec.autoscaling
    assert "enableInTreeAutoscaling" not in rc["spec"] and "autoscalerOptions" not in rc["spec"]
    group = rc["spec"]["workerGroupSpecs"][0]
    assert group["minReplicas"] == group["replicas"] == group["maxReplicas"] == 2
    assert crd_errors(crd_validator, rc) == []


def test_pods_backend_runs_a_fixed_count() -> None:
    spec = _spec(RayConfig(**AUTOSCALING))
    deployments = [o for o in pods.cluster_objects(spec, OWNER) if o["kind"] == "Deployment"]
    assert [d["spec"]["replicas"] for d in deployments] == [1]


def test_quota_counts_the_maximum_and_idle_floor_is_the_minimum() -> None:
    spec = _spec(RayConfig(**AUTOSCALING))
    u = quotas.spec_usage(spec, "x")
    # head 1 CPU / 2Gi (defaults) + 4 workers x 2 CPU / 4Gi at most, none when idle
    assert (u.cpu_millis, u.memory_bytes) == (9000, 18 * 2**30)
    assert (u.cpu_millis_min, u.memory_bytes_min) == (1000, 2 * 2**30)
