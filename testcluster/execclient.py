"""``pods/exec`` through the real API server, as ``kubernetes_asyncio``'s ``WsApiClient`` does it.

A websocket with subprotocol ``v4.channel.k8s.io`` to ``/api/v1/namespaces/{ns}/pods/{name}/exec``;
the API server authorizes it (``create pods/exec``) and proxies the upgrade to the node's kubelet
port (``node/kubelet_server.py``). Used by tests to run commands in a process-node pod's containers.
"""

from __future__ import annotations

import json
import ssl
from urllib.parse import urlencode

import aiohttp

STDOUT, STDERR, ERROR = 1, 2, 3


class ExecError(Exception):
    """The API server refused the exec (not a non-zero exit: that is a return code)."""


def _exit_code(status: dict) -> int:
    if status.get("status") == "Success":
        return 0
    for cause in (status.get("details") or {}).get("causes") or []:
        if cause.get("reason") == "ExitCode":
            return int(cause["message"])
    raise ExecError(status.get("message") or json.dumps(status))


async def pod_exec(
    server: str,
    ctx: ssl.SSLContext,
    namespace: str,
    pod: str,
    argv: list[str],
    container: str | None = None,
    timeout: float = 60.0,
) -> tuple[int, str]:
    """Run ``argv`` in the pod: (exit code, stdout and stderr as they came)."""
    query = [("command", a) for a in argv] + [("stdout", "true"), ("stderr", "true")]
    if container:
        query.append(("container", container))
    url = f"{server}/api/v1/namespaces/{namespace}/pods/{pod}/exec?{urlencode(query)}"
    out: list[bytes] = []
    status: dict | None = None
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
        try:
            ws = await session.ws_connect(url, protocols=("v4.channel.k8s.io",), ssl=ctx, max_msg_size=0)
        except aiohttp.WSServerHandshakeError as e:
            raise ExecError(f"exec in {namespace}/{pod}: HTTP {e.status} {e.message}") from None
        async with ws:
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.BINARY or not msg.data:
                    continue
                channel, data = msg.data[0], msg.data[1:]
                if channel in (STDOUT, STDERR):
                    out.append(data)
                elif channel == ERROR and data:
                    status = json.loads(data)
    if status is None:
        raise ExecError(f"exec in {namespace}/{pod}: the stream ended without a status")
    return _exit_code(status), b"".join(out).decode(errors="replace")
