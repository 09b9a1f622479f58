"""``pods/exec`` over websockets, as ``kubectl exec`` (>= 1.30) and ``kubernetes_asyncio``'s
``WsApiClient`` use it.

``GET|POST /api/v1/namespaces/{ns}/pods/{name}/exec?command=..&command=..&container=c
&stdin=1&stdout=1&stderr=1&tty=0`` upgraded to a websocket with subprotocol
``v5.channel.k8s.io`` or ``v4.channel.k8s.io``. Every message is binary: one channel byte,
then data. Channels: 0 stdin (client to server), 1 stdout, 2 stderr, 3 the final Status
(``{"metadata":{},"status":"Success"}``, or Failure with ``reason: NonZeroExitCode`` and
``details.causes[{reason: ExitCode, message: "<n>"}]``), 4 resize (ignored). v5 adds
``[255, <channel>]`` from the client: close that stream (stdin EOF). After the Status the
server closes the websocket; the client reads the error channel to EOF.

Not served: SPDY (kubectl <= 1.29, or a newer kubectl's fallback) and the v1-v3/base64
protocols; those get a 400 Status that says so. A tty request gets no pty (stderr is merged
into stdout, as with a tty). The command runs through the kubelet's ``exec_stream`` (the
process kubelet; the simulated kubelet has none: 400).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from aiohttp import web

from .errors import ApiError
from testcluster.node.exec_ws import PROTOCOLS, flag, stream
from testcluster.node.netns import terminate_tree

if TYPE_CHECKING:
    from .server import ApiServer, ReqInfo

log = logging.getLogger("k8semu.exec")


def _bad(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


async def serve_exec(api: ApiServer, request: web.Request, info: ReqInfo) -> web.StreamResponse:
    q = request.query
    argv = q.getall("command", [])
    if not argv:
        raise _bad("you must specify at least 1 command")
    stdin, stdout, stderr, tty = (flag(q.get(k)) for k in ("stdin", "stdout", "stderr", "tty"))
    pod = api.store.get(info.rtype, info.namespace, info.name)
    spec = pod.get("spec") or {}
    names = [c["name"] for c in (spec.get("containers") or []) + (spec.get("initContainers") or [])]
    container = q.get("container") or (names[0] if names else "")
    if container not in names:
        raise _bad(f"container {container} is not valid for pod {info.name}")
    if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
        raise _bad(f"cannot exec into a container in a completed pod; current phase is {pod['status']['phase']}")
    if api.pod_exec is None:
        raise _bad(
            'k8semu: pods/exec needs the process kubelet (K8sEmu(kubelet="process")); '
            "the simulated kubelet runs no processes"
        )
    upgrade = request.headers.get("Upgrade", "").lower()
    offered = [p.strip() for h in request.headers.getall("Sec-WebSocket-Protocol", []) for p in h.split(",")]
    if upgrade != "websocket":
        raise _bad(
            f"k8semu: pods/exec is served over websockets ({', '.join(PROTOCOLS)}) only, not "
            f"{upgrade or 'a plain request'}; kubectl >= 1.30 uses websockets"
        )
    if not any(p in PROTOCOLS for p in offered):
        raise _bad(f"k8semu: pods/exec supports the subprotocols {', '.join(PROTOCOLS)}; offered: {offered}")
    try:
        proc = await api.pod_exec(pod, container, argv, stdin, stdout, stderr, tty)
    except LookupError as e:
        raise ApiError(500, "InternalError", f"unable to upgrade connection: {e}") from None
    ws = web.WebSocketResponse(protocols=PROTOCOLS, max_msg_size=0)
    try:
        await ws.prepare(request)
        log.info(
            "exec %s/%s -c %s %s (%s, pid %s)", info.namespace, info.name, container, argv, ws.ws_protocol, proc.pid
        )
        await stream(ws, proc, argv)
    finally:
        if proc.returncode is None:
            await terminate_tree(proc.pid, 0)
            await proc.wait()
    return ws
