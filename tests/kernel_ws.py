"""Run code in a Jupyter kernel over the server's websocket API (what a browser does).

``execute`` runs code on an open websocket; ``Kernel`` starts a kernel of a user's server
through a hub's proxy (``tests.local_hub.Hub``) and holds its websocket.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any
from urllib.parse import quote

import websocket


class KernelError(AssertionError):
    """The code raised in the kernel, or did not finish in time."""


def execute(ws: Any, user: str, code: str, timeout: float = 300) -> dict[str, str]:
    """Execute ``code`` on an open ``.../kernels/<id>/channels`` websocket (websocket-client);
    returns the text of its ``stdout``, ``stderr`` and displayed ``result``."""
    msg_id = uuid.uuid4().hex
    header = {
        "msg_id": msg_id,
        "msg_type": "execute_request",
        "username": user,
        "session": uuid.uuid4().hex,
        "version": "5.3",
        "date": "",
    }
    content = {
        "code": code,
        "silent": False,
        "store_history": False,
        "user_expressions": {},
        "allow_stdin": False,
        "stop_on_error": True,
    }
    ws.send(
        json.dumps(
            {
                "header": header,
                "parent_header": {},
                "metadata": {},
                "channel": "shell",
                "buffers": [],
                "content": content,
            }
        )
    )
    out: dict[str, list[str]] = {"stdout": [], "stderr": [], "result": []}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = json.loads(ws.recv())
        if msg.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        kind, body = msg["msg_type"], msg["content"]
        if kind == "stream":
            out[body["name"]].append(body["text"])
        elif kind in ("execute_result", "display_data"):
            out["result"].append("\n".join(str(v) for v in body.get("data", {}).values()))
        elif kind == "error":
            raise KernelError(
                f"kernel error: {body['ename']}: {body['evalue']}\n" + "\n".join(body["traceback"])[-3000:]
            )
        elif kind == "status" and body.get("execution_state") == "idle":
            return {k: "".join(v) for k, v in out.items()}
    raise KernelError(f"kernel execution did not finish in {timeout} s; output so far: {out}")


class Kernel:
    """One kernel of a user's server, driven over the websocket API."""

    def __init__(self, hub: Any, user: str, token: str, server: str = ""):
        self.hub, self.user, self.token, self.server = hub, user, token, server
        r = hub.user_api(user, token, "POST", "/kernels", server=server, json={"name": "python3"})
        assert r.status_code == 201, f"{r.status_code} {r.text}"
        self.id = r.json()["id"]
        prefix = f"/user/{quote(user)}/{quote(server) + '/' if server else ''}"
        self.ws = websocket.create_connection(
            hub.url.replace("http://", "ws://") + f"{prefix}api/kernels/{self.id}/channels",
            header=[f"Authorization: token {token}"],
            timeout=300,
        )

    def run(self, code: str, timeout: float = 300) -> dict[str, str]:
        """Execute ``code``; returns its ``stdout``, ``stderr`` and displayed ``result`` text."""
        return execute(self.ws, self.user, code, timeout)

    def close(self) -> None:
        self.ws.close()
        self.hub.user_api(self.user, self.token, "DELETE", f"/kernels/{self.id}", server=self.server)
