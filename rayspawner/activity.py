"""Ray activity is notebook activity: a jupyter_server extension.

JupyterHub's idle culler judges a server by the activity its single-user server reports
(``/api/status``'s ``last_activity``, which ``jupyterhub-singleuser`` forwards to the hub):
kernels, terminals, requests. A two-hour Ray job started from a notebook whose browser tab
was closed looks idle. While the server's own Ray cluster runs user work, this extension
stamps ``last_activity_times["rayspawner_ray"]`` in the web app's settings, one of the
sources jupyter_server takes the latest of.

"User work", asked of the cluster's dashboard with its token every ``RayActivity.interval``
seconds:

- a submitted job (``ray job submit``) that is PENDING or RUNNING (``/api/jobs/``);
- a task or actor method that is RUNNING (the state API, ``/api/v0/tasks``), except Ray's
  own long-running system actors (:data:`SYSTEM_CLASSES`).

Not ``/api/component_activities``: its ``driver`` component is ACTIVE for any connected
driver, so a kernel that once called ``ray.init()`` and then sat idle would keep its server
(and cluster) forever. An alive but idle actor is not activity either.

Loaded by every jupyter_server where rayspawner is installed (the ``jupyter_server_config.d``
file it ships) and by the spawners' ``--ServerApp.jpserver_extensions`` argument; without
``RAY_DASHBOARD_URL`` in the environment (no Ray cluster) it does nothing. It also serves
:mod:`rayspawner.cluster_info`.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlencode

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from traitlets import Bool, Float, Unicode, default
from traitlets.config import LoggingConfigurable

ACTIVITY_KEY = "rayspawner_ray"
#: Ray's own actors whose methods run for as long as they live, whatever the user does
SYSTEM_CLASSES = (
    "JobSupervisor",
    "ServeController",
    "ProxyActor",
    "ServeReplica:",
    "_StatsActor",
    "AutoscalingRequester",
    "DatasetStatsActor",
)
RUNNING_TASKS_QUERY = urlencode(
    {"limit": 100, "filter_keys": "state", "filter_predicates": "=", "filter_values": "RUNNING", "detail": "false"}
)
EXTENSION = "rayspawner.activity"


def server_args() -> list[str]:
    """The single-user server's argument that loads this extension (with jupyter_server's
    others: extensions found in config files are merged with this dict)."""
    return [f"--ServerApp.jpserver_extensions={EXTENSION}=True"]


async def _get(client: AsyncHTTPClient, url: str, token: str, timeout: float) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    resp = await client.fetch(HTTPRequest(url, headers=headers, request_timeout=timeout, connect_timeout=timeout))
    return json.loads(resp.body)


def _user_task(task: dict) -> bool:
    name = str(task.get("func_or_class_name") or task.get("name") or "")
    return not name.startswith(SYSTEM_CLASSES)


async def cluster_activity(dashboard_url: str, token: str, timeout: float = 10) -> tuple[bool, str]:
    """(active, why) from the dashboard. Raises on an unreachable dashboard or a refused token."""
    client = AsyncHTTPClient()
    base = dashboard_url.rstrip("/")
    jobs, tasks = await asyncio.gather(
        _get(client, f"{base}/api/jobs/", token, timeout),
        _get(client, f"{base}/api/v0/tasks?{RUNNING_TASKS_QUERY}", token, timeout),
    )
    live_jobs = [j for j in jobs if j.get("type") == "SUBMISSION" and j.get("status") in ("PENDING", "RUNNING")]
    running = [t for t in (tasks.get("data", {}).get("result", {}).get("result") or []) if _user_task(t)]
    why = []
    if live_jobs:
        why.append(f"{len(live_jobs)} job(s) running")
    if running:
        why.append(f"{len(running)} task(s) running")
    return bool(why), ", ".join(why) or "idle"


class RayActivity(LoggingConfigurable):
    """Keeps the single-user server active while its Ray cluster works (``c.RayActivity.*``)."""

    enabled = Bool(
        True,
        config=True,
        help="Count the Ray cluster's work (running jobs, tasks, actor methods) as this server's activity.",
    )
    interval = Float(
        30,
        config=True,
        help="""Seconds between two looks at the Ray cluster. A cluster busy at one look stamps
        the server active then; keep it well below the idle culler's timeout.""",
    )
    dashboard_url = Unicode(config=True, help="The cluster's dashboard; default: $RAY_DASHBOARD_URL.")

    @default("dashboard_url")
    def _dashboard_default(self) -> str:
        return os.environ.get("RAY_DASHBOARD_URL", "")

    #: the last look: {"active": bool, "reason": str, "checked": epoch seconds} (or "error")
    last: dict[str, Any] = {}

    def __init__(self, settings: dict[str, Any], **kw: Any):
        super().__init__(**kw)
        self.settings = settings
        self.last = {}
        self._failing = False
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if self.enabled and self.dashboard_url and self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            await self.check()
            await asyncio.sleep(self.interval)

    async def check(self) -> bool:
        token = os.environ.get("RAY_AUTH_TOKEN", "")
        try:
            active, why = await cluster_activity(self.dashboard_url, token)
        except asyncio.CancelledError:
            raise
        except (HTTPClientError, OSError, ValueError, KeyError, AttributeError, asyncio.TimeoutError) as e:
            # an unreachable cluster is no reason to keep the server: no stamp, one log line per outage
            if not self._failing:
                self.log.warning("Ray activity: cannot ask the dashboard at %s: %s", self.dashboard_url, e)
            self._failing = True
            self.last = {"active": False, "reason": f"error: {e}", "checked": time.time()}
            return False
        if self._failing:
            self.log.info("Ray activity: the dashboard at %s answers again", self.dashboard_url)
        self._failing = False
        self.last = {"active": active, "reason": why, "checked": time.time()}
        if active:
            self.settings.setdefault("last_activity_times", {})[ACTIVITY_KEY] = datetime.now(timezone.utc)
            self.log.debug("Ray activity: %s", why)
        return active


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": EXTENSION}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    from .cluster_info import handlers

    settings = serverapp.web_app.settings
    monitor = RayActivity(settings, parent=serverapp, log=serverapp.log)
    settings["rayspawner_activity"] = monitor
    serverapp.web_app.add_handlers(".*$", handlers(settings.get("base_url", "/")))
    if not monitor.dashboard_url:
        serverapp.log.debug("rayspawner.activity: no RAY_DASHBOARD_URL, no Ray cluster to watch")
        return
    # the event loop runs only once the server starts
    serverapp.io_loop.add_callback(monitor.start)
    serverapp.log.info(
        "rayspawner.activity: Ray work on %s counts as activity (every %.0f s)", monitor.dashboard_url, monitor.interval
    )
