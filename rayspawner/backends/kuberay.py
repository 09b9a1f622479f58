"""The KubeRay backend: one ``ray.io/v1`` RayCluster per user-server (manifests
from :mod:`rayspawner.manifests.kuberay`); the KubeRay operator makes the pods.

Status costs no API requests: it comes from two shared watches per namespace
(not per user) — a RayCluster reflector (the operator's ``status``: ``state``,
conditions ``HeadPodReady`` / ``RayClusterProvisioned`` / ``ReplicaFailure``,
``head.serviceName``, worker counts) and the spawner's ray-pods reflector (head
pod problems such as Unschedulable or an image that cannot be pulled, and the
image's Ray/Python versions).

A spawn costs four requests (Secret create, Secret owner patch, NetworkPolicy
and RayCluster create), a stop three deletes. The head is not recreated by us:
the operator does that; a RayCluster that vanished means the server failed.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException
from kubespawner.clients import shared_client
from kubespawner.reflector import ResourceReflector

from .. import naming
from ..errors import ClusterStartError
from ..manifests import common, kuberay, notebook
from ..spec import ClusterRef, RayClusterSpec
from .base import ClusterBackend, ClusterStatus
from .kube import KINDS, KubeClient, api_error, with_retries
from .pods import check_secret, pod_phase, pod_problem, pod_ready, reported_versions

log = logging.getLogger(__name__)

RAYCLUSTER = KINDS["RayCluster"]
REFLECTOR_KIND = "ray-clusters"
NODE_TYPE_LABEL = "ray.io/node-type"

Cache = Callable[[], Mapping[str, dict]]


# ------------------------------------------------------------------ the watch
class _RayClusterApi:
    """What ResourceReflector needs from an API object (``list_*`` with kubernetes_asyncio's
    keyword arguments, ``watch=True`` included), for the RayCluster custom resource."""

    def __init__(self, api: Any):
        self._api = api
        self.api_client = api.api_client

    async def list_namespaced_raycluster(self, namespace: str, **kwargs: Any) -> Any:
        return await self._api.list_namespaced_custom_object(
            RAYCLUSTER.group, RAYCLUSTER.version, namespace, RAYCLUSTER.plural, **kwargs
        )

    async def list_raycluster_for_all_namespaces(self, **kwargs: Any) -> Any:
        return await self._api.list_cluster_custom_object(
            RAYCLUSTER.group, RAYCLUSTER.version, RAYCLUSTER.plural, **kwargs
        )


class RayClusterReflector(ResourceReflector):
    """One shared watch per namespace (or one for all namespaces) over rayspawner's RayClusters."""

    kind = "rayclusters"
    api_group_name = "CustomObjectsApi"

    def __init__(self, *args: Any, **kwargs: Any):
        omit = kwargs.get("omit_namespace", False)
        self.list_method_name = "list_raycluster_for_all_namespaces" if omit else "list_namespaced_raycluster"
        super().__init__(*args, **kwargs)
        self.api = _RayClusterApi(shared_client("CustomObjectsApi"))

    @property
    def clusters(self) -> dict[str, dict]:
        return self.resources


def _usable(reflector: ResourceReflector | None) -> bool:
    if reflector is None:
        return False
    first = reflector.first_load_future
    if first.done() and (first.cancelled() or first.exception() is not None):
        return False
    task = reflector.watch_task
    return not (first.done() and (task is None or task.done()))


async def watch_ray_clusters(
    registry: dict, key: Any, *, parent: Any, namespace: str, omit_namespace: bool, retry_timeout: float
) -> Cache:
    """Start (once per ``key`` in the spawner class's reflector ``registry``, shared by all
    its spawners) the RayCluster reflector; ``parent``: its traitlets parent (config, log).

    Unlike KubeSpawner's own reflectors, a failed start is not kept (the next spawn
    tries again) and never halts the hub; it raises a ClusterStartError that names
    what is missing (the RBAC rule, or KubeRay itself). Transient API errors (429,
    5xx) are retried for up to ``retry_timeout`` seconds.
    """
    try:
        return await with_retries(
            lambda: _watch_ray_clusters(registry, key, parent, namespace, omit_namespace),
            what=f"list rayclusters in namespace {namespace}",
            timeout=retry_timeout,
            request_timeout=None,  # a reflector start must not be cancelled midway
        )
    except ClusterStartError:
        raise
    except Exception as e:
        raise _watch_error(e, namespace) from None


async def _watch_ray_clusters(registry: dict, key: Any, parent: Any, namespace: str, omit_namespace: bool) -> Cache:
    reflector = registry.get(key)
    if not _usable(reflector):
        if reflector is not None:
            registry.pop(key, None)
            asyncio.ensure_future(reflector.stop())
        reflector = RayClusterReflector(
            parent=parent,
            namespace=namespace,
            labels={naming.LABEL_MANAGED_BY: naming.MANAGED_BY},
            omit_namespace=omit_namespace,
        )
        registry[key] = reflector
        try:
            await reflector.start()
        except BaseException:
            if registry.get(key) is reflector:
                registry.pop(key, None)
            first = reflector.first_load_future
            if first.done() and not first.cancelled():
                first.exception()  # retrieved: other waiters got it already
            raise
    else:
        await reflector.first_load_future

    def clusters() -> Mapping[str, dict]:
        current = registry.get(key) or reflector
        return current.resources

    return clusters


def _watch_error(e: BaseException, namespace: str) -> BaseException:
    if isinstance(e, ApiException):
        return api_error(e, "list", RAYCLUSTER, namespace, rule_verbs=["get", "list", "watch", "create", "delete"])
    if isinstance(e, (asyncio.CancelledError, KeyboardInterrupt, SystemExit)):
        return e
    return ClusterStartError(
        f"Could not watch RayClusters in namespace {namespace}: {type(e).__name__}: {e}", reason="watch"
    )


# ------------------------------------------------------------------ status
def _conditions(status: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {c.get("type"): c for c in status.get("conditions") or [] if isinstance(c, Mapping)}


def _is_head(pod: Mapping[str, Any]) -> bool:
    labels = pod["metadata"].get("labels") or {}
    return labels.get(NODE_TYPE_LABEL) == "head" or labels.get(naming.LABEL_COMPONENT) == naming.COMPONENT_HEAD


def cluster_status(
    cluster: Mapping[str, Any] | None,
    pods: list[Mapping[str, Any]],
    spec: RayClusterSpec | None,
    ref: ClusterRef,
) -> ClusterStatus:
    """ClusterStatus from a RayCluster object (as the operator reports it) and its pods."""
    st = ClusterStatus(exists=cluster is not None)
    if spec is not None:
        st.workers_desired = spec.desired_workers
    if cluster is None:
        st.phase = "creating"
        return st
    if cluster["metadata"].get("deletionTimestamp"):
        st.phase = "terminating"
        return st
    status = cluster.get("status") or {}
    conds = _conditions(status)
    heads = [p for p in pods if _is_head(p) and not p["metadata"].get("deletionTimestamp")]
    head = heads[0] if heads else None
    workers = [p for p in pods if not _is_head(p)]

    head_cond = conds.get("HeadPodReady")
    st.head_ready = head_cond.get("status") == "True" if head_cond else status.get("state") == "ready"
    st.workers_ready = int(status.get("readyWorkerReplicas", sum(1 for p in workers if pod_ready(p))) or 0)
    if "desiredWorkerReplicas" in status:
        st.workers_desired = int(status["desiredWorkerReplicas"] or 0)

    service = (status.get("head") or {}).get("serviceName")
    if service:
        if service != naming.head_service(ref.name):
            st.head_failed = (
                f"KubeRay named the head service {service!r}, not {naming.head_service(ref.name)!r} as requested in "
                "headGroupSpec.headService, so RAY_ADDRESS would be wrong; upgrade the KubeRay operator (>= 1.1)"
            )

    failure = conds.get("ReplicaFailure")
    if failure and failure.get("status") == "True":
        text = f"KubeRay cannot create the Ray pods: {failure.get('message') or failure.get('reason')}"
        if head is None and not st.head_ready:
            st.head_failed = st.head_failed or text
        else:
            st.warnings.append(text)
    if status.get("state") == "failed" and not st.head_ready:
        st.head_failed = (
            st.head_failed or f"KubeRay reports the cluster failed ({status.get('reason') or 'no reason given'})"
        )

    if head is not None:
        st.versions = reported_versions(head)
        problem = pod_problem(head)
        if problem and not st.head_ready:
            st.head_failed = st.head_failed or problem
    for w in workers:
        problem = pod_problem(w)
        if problem:
            st.warnings.append(f"worker {w['metadata']['name']}: {problem}")

    if st.head_ready:
        st.phase = "ready"
    elif head is not None:
        st.phase = pod_phase(head)
    elif not status:
        st.phase = "waiting for the KubeRay operator"
    else:
        st.phase = "waiting for KubeRay to create the head pod"
    return st


# ------------------------------------------------------------------ backend
class KubeRayBackend(ClusterBackend):
    kind = "kuberay"
    autoscales = True

    def __init__(self, kube: KubeClient, ray_pods: Cache, ray_clusters: Cache):
        self.kube = kube
        #: current Ray pods keyed "namespace/name" (the spawner's shared ray-pods reflector)
        self.ray_pods = ray_pods
        #: current rayspawner RayClusters keyed "namespace/name" (a shared reflector)
        self.ray_clusters = ray_clusters

    async def prepare(self, spec: RayClusterSpec) -> None:
        if spec.auth_enabled and spec.secret_owned_at_create:
            await check_secret(self.kube, spec)
        elif spec.auth_enabled:
            await self.kube.create(common.token_secret(spec, secrets.token_urlsafe(32)))

    async def create(self, spec: RayClusterSpec, owner: dict | None, timeout: float | None = None) -> None:
        """With ``secret_owned_at_create`` the Secret is created here, owned by the notebook
        pod, after the NetworkPolicies (an orphan sweep that may not list Secrets finds the
        cluster's name on them) and before the RayCluster (whose authOptions name it)."""
        if spec.auth_enabled and owner and not spec.secret_owned_at_create:
            await self.kube.patch(
                "Secret", spec.namespace, spec.secret_name, {"metadata": {"ownerReferences": [owner]}}
            )
        secret_pending = spec.auth_enabled and spec.secret_owned_at_create
        for manifest in kuberay.cluster_objects(spec, owner):
            if secret_pending and manifest["kind"] != "NetworkPolicy":
                await self.kube.create(common.token_secret(spec, secrets.token_urlsafe(32), owner))
                secret_pending = False
            await self.kube.create(manifest)
        log.info("Created RayCluster %s/%s", spec.namespace, spec.name)

    def _cluster(self, ref: ClusterRef) -> dict | None:
        return self.ray_clusters().get(f"{ref.namespace}/{ref.name}")

    def _pods(self, ref: ClusterRef) -> list[dict]:
        prefix = f"{ref.namespace}/"
        return [
            p
            for key, p in list(self.ray_pods().items())
            if key.startswith(prefix) and (p["metadata"].get("labels") or {}).get(naming.LABEL_CLUSTER) == ref.name
        ]

    async def status(self, spec: RayClusterSpec | ClusterRef) -> ClusterStatus:
        ref = spec.ref() if isinstance(spec, RayClusterSpec) else spec
        return cluster_status(
            self._cluster(ref), self._pods(ref), spec if isinstance(spec, RayClusterSpec) else None, ref
        )

    async def delete(self, ref: RayClusterSpec | ClusterRef, timeout: float) -> None:
        # with the spec that created the cluster, only what it created (as the pods backend)
        spec = ref if isinstance(ref, RayClusterSpec) else None
        ref = spec.ref() if spec else ref
        ns, name = ref.namespace, ref.name
        deletions = [self.kube.delete("RayCluster", ns, name)]
        if not spec or spec.network_policy:
            deletions.append(self.kube.delete("NetworkPolicy", ns, naming.network_policy(name)))
        if not spec or notebook.network_policy(spec, None):
            deletions.append(self.kube.delete("NetworkPolicy", ns, naming.notebook_network_policy(name)))
        if not spec or (spec.network_policy and spec.autoscaling):
            deletions.append(self.kube.delete("NetworkPolicy", ns, naming.api_server_network_policy(name)))
        if not spec or spec.auth_enabled:
            deletions.append(self.kube.delete("Secret", ns, naming.token_secret(name)))
        await asyncio.gather(*deletions)
        deadline = time.monotonic() + timeout
        while self._cluster(ref) is not None or self._pods(ref):
            if time.monotonic() > deadline:
                left = sorted(p["metadata"]["name"] for p in self._pods(ref))
                log.warning(
                    "RayCluster %s/%s still terminating after %ss (cluster object %s; pods: %s)",
                    ns,
                    name,
                    int(timeout),
                    "present" if self._cluster(ref) else "gone",
                    left,
                )
                return
            await asyncio.sleep(0.2)
