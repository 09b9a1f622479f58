"""The plain-pods backend: no operator, just a head Pod, a Service and worker
Deployments (manifests from :mod:`rayspawner.manifests.pods`).

Status comes from a shared pod reflector (one watch per namespace for all Ray
pods), so waiting for a cluster costs no API requests.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any

from .. import naming
from ..manifests import common, notebook, pods
from ..reflector_index import ReflectorIndex
from ..spec import ClusterRef, RayClusterSpec
from .base import ClusterBackend, ClusterStatus
from .kube import KubeClient

log = logging.getLogger(__name__)

#: container waiting reasons after which the head will not start without help
FATAL_WAITING = {
    "ErrImagePull": "the image cannot be pulled",
    "ImagePullBackOff": "the image cannot be pulled",
    "InvalidImageName": "the image name is invalid",
    "CrashLoopBackOff": "Ray keeps crashing on start",
    "CreateContainerError": "the container cannot be created",
}
#: a crash loop is only hopeless after this many restarts (one restart under load is normal)
CRASH_LOOP_RESTARTS = 3
WORKER_GROUPS = ("workers", "gpu-workers")


def pod_problem(pod: Mapping[str, Any]) -> str | None:
    """A readable reason why a pod cannot run, or None."""
    status = pod.get("status") or {}
    for cond in status.get("conditions") or []:
        if (
            cond.get("type") == "PodScheduled"
            and cond.get("status") == "False"
            and cond.get("reason") == "Unschedulable"
        ):
            return f"unschedulable: {cond.get('message') or 'no node has enough resources'}"
    for cs in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
        waiting = (cs.get("state") or {}).get("waiting") or {}
        reason = waiting.get("reason")
        if reason == "CrashLoopBackOff" and cs.get("restartCount", 0) < CRASH_LOOP_RESTARTS:
            continue
        if reason in FATAL_WAITING:
            detail = waiting.get("message") or ""
            return f"{FATAL_WAITING[reason]} ({reason}{': ' + detail if detail else ''})"
    if status.get("phase") == "Failed":
        return f"the pod failed ({status.get('reason') or 'unknown reason'})"
    return None


def pod_phase(pod: Mapping[str, Any]) -> str:
    status = pod.get("status") or {}
    conds = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
    if conds.get("PodScheduled") != "True":
        return "waiting for a node"
    for cs in status.get("containerStatuses") or []:
        waiting = (cs.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") == "ContainerCreating":
            return "pulling image / creating container"
    if status.get("phase") == "Pending":
        return "pulling image / initializing"
    return "starting Ray"


def pod_ready(pod: Mapping[str, Any]) -> bool:
    if pod.get("metadata", {}).get("deletionTimestamp"):
        return False
    conds = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)


def reported_versions(pod: Mapping[str, Any]) -> dict | None:
    """The Ray/Python versions the image reported through the version init container."""
    for cs in (pod.get("status") or {}).get("initContainerStatuses") or []:
        if cs.get("name") != common.VERSION_CONTAINER:
            continue
        message = ((cs.get("state") or {}).get("terminated") or {}).get("message")
        if message:
            try:
                return json.loads(message)
            except ValueError:
                return None
    return None


async def check_secret(kube: KubeClient, spec: RayClusterSpec) -> None:
    """``secret_owned_at_create``: the Secret is made only once the notebook pod exists, and
    the notebook cannot start without it, so a refused create would surface only as the
    notebook's start timeout. A dry-run create now fails the spawn at once, with the reason
    (a missing RBAC verb, a name held by another server), before anything exists."""
    await kube.create(common.token_secret(spec, ""), dry_run=True)


def _cluster_of(pod: dict) -> str | None:
    return (pod.get("metadata", {}).get("labels") or {}).get(naming.LABEL_CLUSTER)


#: status() runs every 0.1-0.5 s per spawning server; scanning every Ray pod of the
#: namespace each time made the hub's CPU grow with N²
_BY_CLUSTER = ReflectorIndex(_cluster_of)


class PodsBackend(ClusterBackend):
    kind = "pods"
    can_recreate_head = True

    def __init__(self, kube: KubeClient, ray_pods: Callable[[], Mapping[str, dict]]):
        self.kube = kube
        #: current Ray pods keyed "namespace/name" (a shared reflector's cache)
        self.ray_pods = ray_pods

    async def prepare(self, spec: RayClusterSpec) -> None:
        if spec.auth_enabled and spec.secret_owned_at_create:
            await check_secret(self.kube, spec)
        elif spec.auth_enabled:
            token = secrets.token_urlsafe(32)
            await self.kube.create(common.token_secret(spec, token))

    async def create(self, spec: RayClusterSpec, owner: dict | None, timeout: float | None = None) -> None:
        """The NetworkPolicy first (no Ray pod exists without it), then everything else at
        once: the head pod is the spawn's critical path and no longer waits behind the
        Secret's ownerReference patch, the Service and the Deployments (under a burst of
        spawns each of those waits its turn at the API server).

        With ``secret_owned_at_create`` the Secret itself is created here, owned by the
        notebook pod, and after the NetworkPolicy: an orphan sweep that may not list
        Secrets finds the cluster's name on that policy."""
        objs = pods.cluster_objects(spec, owner)
        for manifest in [m for m in objs if m["kind"] == "NetworkPolicy"]:
            await self.kube.create(manifest)
        calls = [self.kube.create(m) for m in objs if m["kind"] == "Pod"]
        calls += [self.kube.create(m) for m in objs if m["kind"] not in ("NetworkPolicy", "Pod")]
        if spec.auth_enabled and spec.secret_owned_at_create:
            calls.insert(0, self.kube.create(common.token_secret(spec, secrets.token_urlsafe(32), owner)))
        elif spec.auth_enabled and owner:
            calls.append(
                self.kube.patch("Secret", spec.namespace, spec.secret_name, {"metadata": {"ownerReferences": [owner]}})
            )
        # all of them finish (none is left in flight to race a cleanup), then the first error is raised
        results = await asyncio.gather(*calls, return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r

    async def recreate_head(self, spec: RayClusterSpec, owner: dict | None) -> None:
        await self.kube.create(pods.head_pod(spec, owner))

    def _pods(self, ref: ClusterRef) -> list[dict]:
        return [
            p
            for p in _BY_CLUSTER.get(self.ray_pods(), ref.name)
            if p["metadata"].get("namespace", ref.namespace) == ref.namespace and _cluster_of(p) == ref.name
        ]

    async def wait_ready(self, spec: RayClusterSpec, timeout: float, interval: float = 0.1) -> ClusterStatus:
        # status() reads the shared reflector (no API request), so a short interval costs
        # little and the spawn returns within ~0.1 s of the head turning ready (was 0.5 s)
        return await super().wait_ready(spec, timeout, interval)

    async def status(self, spec: RayClusterSpec | ClusterRef) -> ClusterStatus:
        ref = spec.ref() if isinstance(spec, RayClusterSpec) else spec
        found = self._pods(ref)
        head = next((p for p in found if p["metadata"]["name"] == naming.head_pod(ref.name)), None)
        workers = [
            p
            for p in found
            if (p["metadata"].get("labels") or {}).get(naming.LABEL_COMPONENT) == naming.COMPONENT_WORKER
        ]
        st = ClusterStatus(exists=head is not None)
        st.workers_ready = sum(1 for p in workers if pod_ready(p))
        if isinstance(spec, RayClusterSpec):
            st.workers_desired = spec.desired_workers
        if head is None:
            st.phase = "creating"
            return st
        if head["metadata"].get("deletionTimestamp"):
            st.phase = "terminating"
            return st
        st.versions = reported_versions(head)
        st.head_failed = pod_problem(head)
        st.head_ready = pod_ready(head)
        st.phase = "ready" if st.head_ready else pod_phase(head)
        for w in workers:
            problem = pod_problem(w)
            if problem:
                st.warnings.append(f"worker {w['metadata']['name']}: {problem}")
        return st

    async def delete(self, ref: RayClusterSpec | ClusterRef, timeout: float) -> None:
        """With the spec that created the cluster, only what it created is deleted; with a
        bare ClusterRef (after a hub restart) every name a cluster can have (404 is fine)."""
        spec = ref if isinstance(ref, RayClusterSpec) else None
        ref = spec.ref() if spec else ref
        ns, name = ref.namespace, ref.name
        groups = [g.name for g in spec.worker_groups] if spec else WORKER_GROUPS
        deletions = [self.kube.delete("Deployment", ns, naming.worker_deployment(name, g)) for g in groups]
        deletions += [
            self.kube.delete("Pod", ns, naming.head_pod(name), grace=5),
            self.kube.delete("Service", ns, naming.head_service(name)),
        ]
        if not spec or spec.network_policy:
            deletions.append(self.kube.delete("NetworkPolicy", ns, naming.network_policy(name)))
        if not spec or notebook.network_policy(spec, None):
            deletions.append(self.kube.delete("NetworkPolicy", ns, naming.notebook_network_policy(name)))
        if not spec or spec.auth_enabled:
            deletions.append(self.kube.delete("Secret", ns, naming.token_secret(name)))
        await asyncio.gather(*deletions)
        deadline = time.monotonic() + timeout
        while self._pods(ref):
            if time.monotonic() > deadline:
                left = sorted(p["metadata"]["name"] for p in self._pods(ref))
                log.warning("Ray pods of %s still terminating after %ss: %s", name, int(timeout), left)
                return
            await asyncio.sleep(0.2)
