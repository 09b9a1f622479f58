"""The contract between the node agent (``agent.py``, the kubelet's side towards the real
API server) and the pod runtimes it drives.

The agent watches the pods bound to its Node and hands each to a runtime, which reads
and reports only through :class:`PodContext`. Two runtimes implement it:

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

    async def get_object(self, resource: str, name: str, namespaced: bool = True) -> dict[str, Any] | None:
        """A core/v1 object (``persistentvolumeclaims`` in the pod's namespace, or a
        cluster-scoped one such as ``persistentvolumes``), or None."""

    async def request_token(self, audience: str | None, expiration_seconds: int) -> str:
        """A token of the pod's ServiceAccount bound to the pod (TokenRequest); raises
        ConfigError when the API server refuses it."""

    async def update_status(self, status: dict[str, Any]) -> None:
        """Replace ``.status`` of the pod (phase, podIP, conditions, containerStatuses, ...).

        A no-op if the pod is gone or its uid changed.
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
