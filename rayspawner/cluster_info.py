"""``GET <server>/rayspawner/api/cluster``: the user's own Ray cluster, as JSON.

Behind the single-user server's own auth (like ``/api/status``): what the cluster holds
now (its live nodes' CPU, GPU, memory and object store, from the dashboard's state API,
so an autoscaled cluster shows its current size), its name, the dashboard path, and the
last look of :mod:`rayspawner.activity` (busy or idle). Loaded by that extension.
"""

from __future__ import annotations

import json
import os
from typing import Any

from jupyter_server.base.handlers import APIHandler
from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

PATH = "rayspawner/api/cluster"
#: the notebook's own Ray node (driver mode on Kubernetes) offers no resources to the user
NOTEBOOK_NODE_LABEL = ("rayspawner/role", "notebook")


def summarize(nodes: list[dict[str, Any]]) -> dict[str, Any]:
    out = {"nodes": [], "total": {"cpu": 0.0, "gpu": 0.0, "memory_bytes": 0, "object_store_bytes": 0}}
    for n in nodes:
        if n.get("state") != "ALIVE" or (n.get("labels") or {}).get(NOTEBOOK_NODE_LABEL[0]) == NOTEBOOK_NODE_LABEL[1]:
            continue
        res = n.get("resources_total") or {}
        node = {
            "head": bool(n.get("is_head_node")),
            "cpu": res.get("CPU", 0.0),
            "gpu": res.get("GPU", 0.0),
            "memory_bytes": int(res.get("memory", 0)),
            "object_store_bytes": int(res.get("object_store_memory", 0)),
        }
        out["nodes"].append(node)
        for key in out["total"]:
            out["total"][key] += node[key]
    return out


class ClusterInfoHandler(APIHandler):
    # looking at the cluster's size (a dashboard widget, a script) is not using the server
    _track_activity = False

    @web.authenticated
    async def get(self) -> None:
        url = os.environ.get("RAY_DASHBOARD_URL", "")
        if not url:
            raise web.HTTPError(404, "This server has no Ray cluster.")
        body: dict[str, Any] = {
            "cluster": os.environ.get("RAY_CLUSTER_NAME", ""),
            "dashboard": os.environ.get("RAY_DASHBOARD_PROXY_PATH", ""),
        }
        monitor = self.settings.get("rayspawner_activity")
        body["activity"] = dict(monitor.last) if monitor is not None else {}
        token = os.environ.get("RAY_AUTH_TOKEN", "")
        try:
            resp = await AsyncHTTPClient().fetch(
                HTTPRequest(
                    url.rstrip("/") + "/api/v0/nodes?limit=1000",
                    headers={"Authorization": f"Bearer {token}"} if token else {},
                    request_timeout=10,
                )
            )
            nodes = json.loads(resp.body)["data"]["result"]["result"]
        except (HTTPClientError, OSError, ValueError, KeyError) as e:
            body["error"] = f"the Ray dashboard did not answer: {e}"
            nodes = []
        body.update(summarize(nodes))
        self.finish(json.dumps(body))


def handlers(base_url: str) -> list[tuple[str, type]]:
    return [(base_url.rstrip("/") + "/" + PATH, ClusterInfoHandler)]
