"""The steps of a Kubernetes spawn, in words a user understands (pure functions).

RaySpawner's ``progress`` merges KubeSpawner's notebook events with these steps, read
from the reflectors' copies of the notebook pod and the cluster's status (no API
requests): notebook scheduled / started / ready; the Ray head starting / accepting
connections; workers joined k/N; in driver mode, the notebook joining its cluster.
"""

from __future__ import annotations

from typing import Any

from . import quotas
from .backends.base import ClusterStatus
from .manifests import notebook as notebook_manifests
from .spec import RayClusterSpec

Steps = list[tuple[str, str]]


def notebook_joined(spec: RayClusterSpec | None, pod: dict[str, Any] | None) -> bool | None:
    """None: not expected (Ray Client mode, or no Ray node sidecar in the pod);
    else whether the sidecar reports ready (its ``ray start`` joined the cluster)."""
    if not spec or not spec.driver_mode or pod is None:
        return None
    name = notebook_manifests.NOTEBOOK_NODE_CONTAINER
    if not any(c.get("name") == name for c in pod.get("spec", {}).get("initContainers") or []):
        return None
    return notebook_manifests.node_ready(pod)


def _conditions(pod: dict[str, Any] | None) -> dict[str, str]:
    return {c.get("type"): c.get("status") for c in ((pod or {}).get("status") or {}).get("conditions") or []}


def notebook_steps(pod: dict[str, Any] | None) -> tuple[Steps, int]:
    """The notebook pod's steps, and how many of its 3 are done."""
    steps: Steps = []
    status = (pod or {}).get("status") or {}
    conditions = _conditions(pod)
    node = (pod or {}).get("spec", {}).get("nodeName")
    if conditions.get("PodScheduled") != "True" and not node:
        return steps, 0
    steps.append(("notebook-scheduled", f"Notebook scheduled on node {node}" if node else "Notebook scheduled"))
    running = any(
        "running" in (cs.get("state") or {})
        for cs in status.get("containerStatuses") or []
        if cs.get("name") == "notebook"
    )
    if running:
        steps.append(("notebook-started", "Notebook container started"))
    if conditions.get("Ready") == "True":
        steps.append(("notebook-ready", "Notebook ready"))
    return steps, len(steps)


def describe_cluster(spec: RayClusterSpec, st: ClusterStatus, version_warning: str | None = None) -> str:
    message = st.message(spec)
    if st.warnings:
        message += " — " + "; ".join(st.warnings[:2])
    if version_warning:
        message += f" Warning: {version_warning}"
    return message


def spawn_steps(
    pod: dict[str, Any] | None,
    spec: RayClusterSpec | None,
    st: ClusterStatus | None,
    version_warning: str | None = None,
) -> tuple[Steps, int]:
    """Every step reached so far as (key, message), and the progress (10-95) they are worth."""
    steps, done = notebook_steps(pod)
    total = 3.0
    if spec:
        total += 4
        if st is not None:
            steps.append(("cluster", describe_cluster(spec, st, version_warning)))
            done += (1 if st.exists else 0) + (2 if st.head_ready else 0)
            if st.workers_desired:
                done += min(1.0, st.workers_ready / st.workers_desired)
            elif st.head_ready:
                done += 1
        joined = notebook_joined(spec, pod)
        if joined is not None:
            total += 1
            if joined:
                steps.append(("joined", f"Your notebook joined its Ray cluster {spec.name}"))
                done += 1
    return steps, int(10 + 85 * done / total)


def notebook_final_message(pod: dict[str, Any] | None) -> str:
    return "Notebook ready; connecting to your server" if _conditions(pod).get("Ready") == "True" else ""


def ready_message(
    spec: RayClusterSpec,
    st: ClusterStatus,
    pod: dict[str, Any] | None,
    version_warning: str | None = None,
    autoscaled: bool = False,
) -> str:
    """The closing message of a spawn whose head is ready (``autoscaled``: its workers come
    and go between min and max)."""
    joined = notebook_joined(spec, pod)
    you = {True: "; your notebook joined it", False: "; your notebook is still joining it", None: ""}[joined]
    message = (
        f"Ray cluster {spec.name} is ready: head accepting connections, workers joined "
        f"{st.workers_ready}/{st.workers_desired}{you}. ray.init() connects to it."
    )
    message += " " + quotas.size_sentence(spec, autoscaled)
    if version_warning:
        message += f" Warning: {version_warning}"
    return message
