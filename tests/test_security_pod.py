"""Pod security of every Ray pod rayspawner generates, checked against OpenShift's
``restricted-v2`` SecurityContextConstraints (and Pod Security "restricted"), plus the
project's own rules (limits everywhere, no service-account token in Ray containers).

Checked on the manifests of both backends over a matrix of options, on the pods the real
test cluster creates from them (the Deployment controller, the KubeRay operator) under the
restricted Pod Security admission, and on the init container RaySpawner adds to the notebook pod.
"""

from __future__ import annotations

import asyncio
from contextlib import contextmanager
from typing import Any, Iterator

import pytest

from rayspawner.manifests import common, kuberay, pods

Manifest = dict[str, Any]

#: restricted-v2: volumes
ALLOWED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
#: restricted-v2: allowedCapabilities
ALLOWED_CAPS = {"NET_BIND_SERVICE"}


def _container_violations(c: Manifest, pod_sc: Manifest, where: str) -> list[str]:
    out: list[str] = []
    sc = c.get("securityContext") or {}
    name = f"{where} container {c.get('name')}"
    if sc.get("privileged"):
        out.append(f"{name}: privileged")
    if sc.get("allowPrivilegeEscalation") is not False:
        out.append(f"{name}: allowPrivilegeEscalation must be false")
    caps = sc.get("capabilities") or {}
    if "ALL" not in (caps.get("drop") or []):
        out.append(f"{name}: capabilities.drop must contain ALL")
    extra = set(caps.get("add") or []) - ALLOWED_CAPS
    if extra:
        out.append(f"{name}: capabilities.add {sorted(extra)} not allowed")
    if "runAsUser" in sc or "runAsGroup" in sc:
        out.append(f"{name}: fixed runAsUser/runAsGroup (restricted-v2 assigns a UID from the namespace range)")
    if "seLinuxOptions" in sc:
        out.append(f"{name}: seLinuxOptions set (restricted-v2: MustRunAs the namespace's)")
    if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is not True:
        out.append(f"{name}: runAsNonRoot must be true")
    seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
    if seccomp != "RuntimeDefault":
        out.append(f"{name}: seccompProfile must be RuntimeDefault, not {seccomp}")
    if sc.get("procMount") not in (None, "Default"):
        out.append(f"{name}: procMount {sc['procMount']}")
    for p in c.get("ports") or []:
        if p.get("hostPort"):
            out.append(f"{name}: hostPort {p['hostPort']}")
    limits = (c.get("resources") or {}).get("limits") or {}
    for r in ("cpu", "memory"):
        if r not in limits:
            out.append(f"{name}: no {r} limit")
    for m in c.get("volumeMounts") or []:
        if m.get("mountPath", "").startswith("/var/run/secrets/kubernetes.io"):
            out.append(f"{name}: mounts a service-account token at {m['mountPath']}")
    return out


def restricted_v2_violations(pod_spec: Manifest, where: str, *, token_mount_ok: tuple[str, ...] = ()) -> list[str]:
    """Everything in a pod spec that OpenShift's restricted-v2 SCC (or this project) rejects.

    ``token_mount_ok``: containers allowed to mount the API token (KubeRay's autoscaler sidecar).
    """
    out: list[str] = []
    sc = pod_spec.get("securityContext") or {}
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod_spec.get(key):
            out.append(f"{where}: {key}")
    if "runAsUser" in sc or "runAsGroup" in sc or "fsGroup" in sc:
        out.append(f"{where}: pod securityContext fixes runAsUser/runAsGroup/fsGroup")
    if "seLinuxOptions" in sc:
        out.append(f"{where}: pod seLinuxOptions set")
    if sc.get("sysctls"):
        out.append(f"{where}: sysctls")
    if pod_spec.get("automountServiceAccountToken") is not False:
        out.append(f"{where}: automountServiceAccountToken must be false")
    for v in pod_spec.get("volumes") or []:
        kinds = set(v) - {"name"}
        if not kinds <= ALLOWED_VOLUMES:
            out.append(f"{where}: volume {v.get('name')} of type {sorted(kinds - ALLOWED_VOLUMES)}")
    for c in (pod_spec.get("initContainers") or []) + (pod_spec.get("containers") or []):
        problems = _container_violations(c, sc, where)
        if c.get("name") in token_mount_ok:
            problems = [p for p in problems if "service-account token" not in p]
        out.extend(problems)
    for c in pod_spec.get("ephemeralContainers") or []:
        out.append(f"{where}: ephemeral container {c.get('name')}")
    return out


def ray_pod_specs(manifests: list[Manifest]) -> list[tuple[str, Manifest]]:
    """(where, pod spec) of every Ray pod in a backend's objects; KubeRay's autoscaler
    sidecar (from autoscalerOptions) is checked as a container of the head."""
    found: list[tuple[str, Manifest]] = []
    for m in manifests:
        kind = m["kind"]
        if kind == "Pod":
            found.append((f"Pod {m['metadata']['name']}", m["spec"]))
        elif kind == "Deployment":
            found.append((f"Deployment {m['metadata']['name']}", m["spec"]["template"]["spec"]))
        elif kind == "RayCluster":
            opts = m["spec"].get("autoscalerOptions")
            for group, template in kuberay.pod_templates(m):
                spec = dict(template["spec"])
                if group == "head" and opts:
                    sidecar = {
                        "name": "autoscaler",
                        **{
                            k: v
                            for k, v in opts.items()
                            if k in ("resources", "securityContext", "volumeMounts", "image")
                        },
                    }
                    spec["containers"] = [*spec["containers"], sidecar]
                found.append((f"RayCluster {m['metadata']['name']} {group}", spec))
    return found


# ------------------------------------------------------------------ the matrix
VOLUME = {"name": "data", "persistentVolumeClaim": {"claimName": "shared"}}
MOUNT = {"name": "data", "mountPath": "/data"}
MATRIX: dict[str, dict[str, Any]] = {
    "defaults": {},
    "separate-ray-image": {"ray_image": "quay.io/rayspawner/ray:2.60.0"},  # adds the version init container
    "gpu-workers": {
        "ray_gpu_worker_replicas": 1,
        "ray_gpu_worker_gpus": 1,
        "ray_max_worker_gpu": 1,
        "ray_tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "ray_node_selector": {"pool": "gpu"},
    },
    "autoscaling": {"ray_worker_min_replicas": 0, "ray_worker_max_replicas": 4},
    "volumes-and-extras": {
        "ray_volumes": [VOLUME],
        "ray_volume_mounts": [MOUNT],
        "ray_extra_env": {"X": "1"},
        "ray_image_pull_policy": "Always",
        "ray_extra_annotations": {"a": "b"},
    },
    "auth-and-policy-off": {"ray_auth_enabled": False, "ray_network_policy_enabled": False},
    "tiny": {
        "ray_head_cpu": "250m",
        "ray_head_memory": "512Mi",
        "ray_worker_cpu": "100m",
        "ray_worker_memory": "512Mi",
        "ray_worker_replicas": 0,
    },
}
OWNER = common.owner_reference("jupyter-alice", "00000000-0000-0000-0000-000000000001")


async def spec_for(factory: Any, kube: Any, traits: dict[str, Any]) -> Any:
    sp = factory(kube, ray_enabled=True, profile_list=[], ray_orphan_sweep_interval=0, **traits)
    return sp, await sp.load_ray_options()


@pytest.mark.asyncio
@pytest.mark.parametrize("case", list(MATRIX))
async def test_every_ray_pod_manifest_is_restricted_v2(case, kube, ray_spawner_factory):
    sp, spec = await spec_for(ray_spawner_factory, kube, MATRIX[case])
    for backend in (pods, kuberay):
        objs = backend.cluster_objects(spec, OWNER)
        found = ray_pod_specs(objs)
        assert len(found) >= 2, found
        problems = []
        for where, pod_spec in found:
            problems += restricted_v2_violations(pod_spec, where, token_mount_ok=("autoscaler",))
        assert problems == [], f"{backend.__name__} {case}: {problems}"
        if backend is kuberay and spec.autoscaling:
            head = next(s for w, s in found if w.endswith(" head"))
            # the API token goes to the autoscaler sidecar only, never into the Ray container
            ray_mounts = [
                m["mountPath"]
                for c in head["containers"]
                if c["name"] != "autoscaler"
                for m in c.get("volumeMounts", [])
            ]
            assert kuberay.SERVICE_ACCOUNT_DIR not in ray_mounts
            assert [m["mountPath"] for m in head["containers"][-1]["volumeMounts"]] == [kuberay.SERVICE_ACCOUNT_DIR]
    # the init container RaySpawner adds to the notebook pod obeys the same container rules
    notebook = await sp.get_pod_manifest()
    ours = [c for c in notebook.spec.init_containers or [] if c.name == common.VERSION_CONTAINER]
    assert bool(ours) == (case == "separate-ray-image")
    from kubernetes_asyncio.client import ApiClient

    for c in ours:  # the notebook pod is KubeSpawner's; the container we add must still be restricted
        assert _container_violations(ApiClient().sanitize_for_serialization(c), {}, "notebook pod") == []


@contextmanager
def bound_claim(kube: Any, claim: str) -> Iterator[None]:
    """A PersistentVolumeClaim ``claim`` in the test's namespace, bound to a PersistentVolume made
    for it (the scheduler keeps a pod whose claim is missing or unbound Pending)."""
    pv = f"{kube.ns}-{claim}"
    kube.create_object(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": pv},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteMany"],
                "storageClassName": "",
                "persistentVolumeReclaimPolicy": "Retain",
                "hostPath": {"path": f"/var/tmp/{pv}"},
                "claimRef": {"namespace": kube.ns, "name": claim},
            },
        }
    )
    try:
        kube.create_object(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": claim, "namespace": kube.ns},
                "spec": {
                    "accessModes": ["ReadWriteMany"],
                    "storageClassName": "",
                    "volumeName": pv,
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            }
        )
        kube.wait_for(
            lambda: (
                (kube.get_object("persistentvolumeclaims", kube.ns, claim).get("status") or {}).get("phase") == "Bound"
            ),
            what=f"claim {claim} bound",
        )
        yield
    finally:
        kube.delete_object("persistentvolumes", None, pv)


@pytest.mark.asyncio
@pytest.mark.parametrize("backend", ["pods", "kuberay"])
async def test_pods_created_in_the_api_server_are_restricted_v2(backend, kube, ray_spawner_factory):
    """What the Deployment controller / the KubeRay operator make from our manifests keeps the
    settings, and the restricted Pod Security admission lets every one of them in."""
    sp = ray_spawner_factory(kube, ray_backend=backend, ray_orphan_sweep_interval=0, **MATRIX["volumes-and-extras"])
    sp.user_options = {"profile": "ray", "workers": "2"}
    with bound_claim(kube, VOLUME["persistentVolumeClaim"]["claimName"]):
        await asyncio.wait_for(sp.start(), 30)
        name = sp.ray_session.spec.name
        deadline = asyncio.get_running_loop().time() + 20
        while len(kube.list_objects("pods", kube.ns, f"ray.io/cluster={name}")) < 3:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.1)
        created = kube.list_objects("pods", kube.ns, f"ray.io/cluster={name}")
        assert len(created) == 3, [p["metadata"]["name"] for p in created]
        problems = [
            p for pod in created for p in restricted_v2_violations(pod["spec"], f"pod {pod['metadata']['name']}")
        ]
        assert problems == []
        assert all(VOLUME in pod["spec"]["volumes"] for pod in created)
        await asyncio.wait_for(sp.stop(), 30)


def test_checker_catches_each_rule():
    good = {
        "automountServiceAccountToken": False,
        "securityContext": dict(common.POD_SECURITY_CONTEXT),
        "containers": [
            {
                "name": "c",
                "securityContext": dict(common.CONTAINER_SECURITY_CONTEXT),
                "resources": {"limits": {"cpu": "1", "memory": "1Gi"}},
            }
        ],
    }
    assert restricted_v2_violations(good, "good") == []

    def bad(**changes: Any) -> list[str]:
        import copy

        spec = copy.deepcopy(good)
        for path, value in changes.items():
            target = spec
            keys = path.split("__")
            for k in keys[:-1]:
                target = target[int(k)] if k.isdigit() else target[k]
            if value is None:
                target.pop(keys[-1], None)
            else:
                target[keys[-1]] = value
        return restricted_v2_violations(spec, "bad")

    assert bad(hostNetwork=True) and bad(hostPID=True) and bad(automountServiceAccountToken=None)
    assert bad(volumes=[{"name": "h", "hostPath": {"path": "/"}}])
    assert bad(securityContext__runAsUser=1000) and bad(securityContext__fsGroup=1000)
    c = "containers__0__securityContext__"
    assert bad(**{c + "privileged": True}) and bad(**{c + "allowPrivilegeEscalation": None})
    assert bad(**{c + "capabilities": {"drop": ["NET_RAW"]}}) and bad(
        **{c + "capabilities": {"drop": ["ALL"], "add": ["SYS_ADMIN"]}}
    )
    assert bad(**{c + "runAsUser": 0}) and bad(**{c + "seccompProfile": {"type": "Unconfined"}})
    assert bad(**{c + "runAsNonRoot": False})
    assert bad(containers__0__resources={"requests": {"cpu": "1"}})
    assert bad(containers__0__ports=[{"containerPort": 80, "hostPort": 80}])
    assert bad(
        containers__0__volumeMounts=[{"name": "t", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}]
    )
