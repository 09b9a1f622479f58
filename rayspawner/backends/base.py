"""The backend interface: how a Ray cluster comes into being and goes away.

A backend does I/O only; what to create comes from the pure manifest builders
(or, for the local backend, from the spec directly).
"""

from __future__ import annotations

import abc
import asyncio
import logging
import time
from dataclasses import dataclass, field

from ..errors import ClusterStartError
from ..spec import ClusterRef, RayClusterSpec

log = logging.getLogger(__name__)


@dataclass
class ClusterStatus:
    """What a backend knows about one cluster right now."""

    #: the cluster's head (pods backend) or its RayCluster (KubeRay) exists
    exists: bool = False
    head_ready: bool = False
    #: a reason the head cannot come up without an admin's help (unschedulable, image pull, ...)
    head_failed: str | None = None
    workers_ready: int = 0
    workers_desired: int = 0
    #: Ray/Python versions of the cluster image, once known ({"ray": ..., "python": ...})
    versions: dict | None = None
    #: short human description of the current step ("head: pulling image", ...)
    phase: str = ""
    warnings: list[str] = field(default_factory=list)
    #: workers that failed past their restarts, by role (local backend): the server has failed
    failed_workers: dict[str, str] = field(default_factory=dict)

    def message(self, spec: RayClusterSpec) -> str:
        """The cluster's current step, one line in words a user understands (progress page)."""
        if self.head_failed:
            return f"Ray cluster {spec.name}: {self.head_failed}"
        if not self.exists:
            return f"Ray cluster {spec.name}: being created"
        if self.phase == "terminating":
            return f"Ray cluster {spec.name}: being removed"
        if not self.head_ready:
            return f"Ray cluster {spec.name}: head starting ({self.phase or 'starting'})"
        return (
            f"Ray cluster {spec.name}: head accepting connections, "
            f"workers joined {self.workers_ready}/{self.workers_desired}"
        )


class ClusterBackend(abc.ABC):
    """Create, watch and delete one user-server's Ray cluster.

    Every backend implements these signatures as they are; operations on an existing
    cluster take its spec when the hub has it, or only the ClusterRef kept in the hub's
    state (after a restart). Optional abilities are declared (``can_recreate_head``), and
    the defaults below make them harmless where a backend lacks them.
    """

    #: "pods", "kuberay" or "local" (kept in the spawner's state)
    kind: str = ""
    #: whether :meth:`recreate_head` works (pods: the hub recreates a vanished head Pod;
    #: KubeRay's operator does that itself; local heads are reported failed instead)
    can_recreate_head: bool = False
    #: whether a spec's min < max workers means autoscaling (KubeRay); elsewhere the workers
    #: stay at their ``replicas``
    autoscales: bool = False

    async def prepare(self, spec: RayClusterSpec) -> None:  # noqa: B027 - optional: nothing by default
        """Create what must exist before the notebook starts (the token Secret; local: ports,
        temp dir and token). Idempotent."""

    @abc.abstractmethod
    async def create(self, spec: RayClusterSpec, owner: dict | None, timeout: float | None = None) -> None:
        """Create the cluster. ``owner``: the notebook pod's ownerReference (Kubernetes; None
        locally). ``timeout``: how long the create itself may take where it waits for
        processes (local); Kubernetes creates are bounded by the API retry timeout."""

    def notebook_started(self, ref: ClusterRef, pid: int) -> None:  # noqa: B027 - optional
        """The notebook's process is known (local: recorded for the orphan sweep; on
        Kubernetes the ownerReference passed to :meth:`create` does this)."""

    def notebook_env(self, spec: RayClusterSpec) -> dict:
        """What the notebook gets in its environment to reach this cluster."""
        from ..env import notebook_env

        return notebook_env(spec)

    @abc.abstractmethod
    async def status(self, spec: RayClusterSpec | ClusterRef) -> ClusterStatus:
        """The cluster's current status; cheap (from a cache/reflector where possible).
        With only a ClusterRef (after a hub restart) what depends on the spec (desired
        workers) is unknown."""

    @abc.abstractmethod
    async def delete(self, ref: RayClusterSpec | ClusterRef, timeout: float) -> None:
        """Delete every object/process of the cluster (missing is fine) and wait, up to
        ``timeout`` seconds, until they are gone. With the spec, only what it created;
        with a ClusterRef (after a hub restart), every name a cluster can have."""

    async def recreate_head(self, spec: RayClusterSpec, owner: dict | None) -> None:
        """Create the head again after it vanished (only where ``can_recreate_head``)."""
        raise NotImplementedError(f"the {self.kind} backend cannot recreate a head")

    async def wait_ready(self, spec: RayClusterSpec, timeout: float, interval: float = 0.5) -> ClusterStatus:
        """Wait until the head accepts clients; raise ClusterStartError with the reason if it cannot."""
        deadline = time.monotonic() + timeout
        status = ClusterStatus()
        while True:
            status = await self.status(spec)
            if status.head_failed:
                raise ClusterStartError(
                    f"The Ray head of cluster {spec.name} cannot start: {status.head_failed}",
                    reason=_reason_label(status.head_failed),
                )
            if status.head_ready:
                return status
            if time.monotonic() > deadline:
                raise ClusterStartError(
                    f"The Ray head of cluster {spec.name} was not ready within {int(timeout)} s "
                    f"(last state: {status.phase or 'unknown'}).",
                    reason="timeout",
                )
            await asyncio.sleep(interval)


def _reason_label(text: str) -> str:
    lowered = text.lower()
    for key in ("unschedulable", "image", "quota", "forbidden", "crash"):
        if key in lowered:
            return key
    return "head_failed"
