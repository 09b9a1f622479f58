"""The contract between the loopback API server and its kubelets.

The API server (``server.py``/``store.py``) owns every object. A kubelet is told
about pods bound to it and reports back only through :class:`PodContext`; it
never touches the store directly. Two kubelets implement it:

- ``kubelet_sim.SimKubelet``: phases, conditions, container statuses and events
  after configurable delays, no processes;
- ``kubelet_process.ProcessKubelet``: runs each container's ``command``/``args``
  with its resolved ``env`` as real local processes, in a network namespace of
  the pod's own where the machine allows it.
"""

from __future__ import annotations

from typing import Any, Protocol

HOST_IP = "127.0.0.1"  # where a simulated pod runs: this machine, loopback only


class PodContext(Protocol):
    """What a kubelet may ask of the API server for one pod (thread-safe, async)."""

    namespace: str
    name: str
    uid: str

    async def get_secret(self, name: str) -> dict[str, Any] | None:
        """The Secret object in the pod's namespace (``data`` base64 as stored), or None."""

    async def get_configmap(self, name: str) -> dict[str, Any] | None:
        """The ConfigMap object in the pod's namespace, or None."""

    async def update_status(self, status: dict[str, Any]) -> None:
        """Replace ``.status`` of the pod (phase, podIP, conditions, containerStatuses, ...).

        Bumps resourceVersion and emits a MODIFIED watch event. A no-op if the pod
        is gone or its uid changed.
        """

    async def emit_event(self, reason: str, message: str, type_: str = "Normal") -> None:
        """Record a core/v1 Event whose involvedObject is this pod."""

    def service_hosts(self) -> dict[str, str]:
        """Current DNS names -> IP for Services and pods (``<svc>.<ns>.svc.cluster.local``,
        ``<svc>.<ns>.svc``, ``<svc>.<ns>``, ``<svc>`` for same-namespace), for hosts files."""


class Kubelet(Protocol):
    """A node agent. All methods are called on the API server's event loop."""

    async def run_pod(self, pod: dict[str, Any], ctx: PodContext) -> None:
        """Start the pod (returns quickly; runs in the background) and drive its status."""

    async def kill_pod(self, pod: dict[str, Any], grace_period_seconds: int) -> None:
        """Stop every process/timer of the pod. The server removes the object afterwards."""

    async def shutdown(self) -> None:
        """Kill everything and remove every netns/veth/bridge/hosts file created."""
