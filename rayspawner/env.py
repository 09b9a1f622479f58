"""What the notebook (and the Ray nodes) get in their environment — one home for env names.

The token never appears as a plain value on Kubernetes: it is a
``secretKeyRef`` to the cluster's Secret.
"""

from __future__ import annotations

from typing import Any

from . import naming
from .spec import CLIENT_PORT, DASHBOARD_PORT, GCS_PORT, RayClusterSpec

RAY_ADDRESS = "RAY_ADDRESS"
RAY_API_SERVER_ADDRESS = "RAY_API_SERVER_ADDRESS"
RAY_DASHBOARD_URL = "RAY_DASHBOARD_URL"
RAY_CLUSTER_NAME = "RAY_CLUSTER_NAME"
RAY_AUTH_MODE = "RAY_AUTH_MODE"
RAY_AUTH_TOKEN = "RAY_AUTH_TOKEN"
#: where the dashboard is reachable from the browser, through the single-user server
RAY_DASHBOARD_PROXY_PATH = "RAY_DASHBOARD_PROXY_PATH"
DASHBOARD_PROXY_SUFFIX = "ray-dashboard/"


def addresses(
    host: str,
    client_port: int = CLIENT_PORT,
    dashboard_port: int = DASHBOARD_PORT,
    *,
    driver: bool = False,
    gcs_port: int = GCS_PORT,
) -> dict[str, str]:
    """``RAY_ADDRESS`` is the GCS (``host:port``: the kernel is a direct driver) in driver
    mode, else Ray Client's ``ray://host:port``."""
    dashboard = f"http://{host}:{dashboard_port}"
    return {
        RAY_ADDRESS: f"{host}:{gcs_port}" if driver else f"ray://{host}:{client_port}",
        RAY_API_SERVER_ADDRESS: dashboard,
        RAY_DASHBOARD_URL: dashboard,
    }


def token_ref(secret_name: str) -> dict[str, Any]:
    return {"valueFrom": {"secretKeyRef": {"name": secret_name, "key": naming.TOKEN_KEY}}}


def notebook_env(spec: RayClusterSpec, *, head_host: str | None = None) -> dict[str, Any]:
    """Env for the notebook pod, in KubeSpawner's ``environment`` form (values may be dicts)."""
    env: dict[str, Any] = addresses(head_host or spec.head_host, driver=spec.driver_mode)
    env[RAY_CLUSTER_NAME] = spec.name
    env[RAY_DASHBOARD_PROXY_PATH] = DASHBOARD_PROXY_SUFFIX
    if spec.auth_enabled:
        env[RAY_AUTH_MODE] = "token"
        env[RAY_AUTH_TOKEN] = token_ref(spec.secret_name)
    return env


def local_notebook_env(
    name: str,
    host: str,
    client_port: int,
    dashboard_port: int,
    token: str | None,
    *,
    driver: bool = False,
    gcs_port: int = GCS_PORT,
) -> dict[str, str]:
    """Env for a local-process notebook (local mode has no Secrets: the process env is private).
    ``driver``: the kernel attaches to the cluster's GCS directly (same host, no extra node)."""
    env = addresses(host, client_port, dashboard_port, driver=driver, gcs_port=gcs_port)
    env[RAY_CLUSTER_NAME] = name
    env[RAY_DASHBOARD_PROXY_PATH] = DASHBOARD_PROXY_SUFFIX
    if token:
        env[RAY_AUTH_MODE] = "token"
        env[RAY_AUTH_TOKEN] = token
    return env


def ray_node_env(spec: RayClusterSpec) -> list[dict[str, Any]]:
    """Env of Ray head and worker containers, as a Kubernetes EnvVar list."""
    env: list[dict[str, Any]] = [
        {"name": RAY_CLUSTER_NAME, "value": spec.name},
        {"name": "RAY_USAGE_STATS_ENABLED", "value": "0"},
    ]
    if spec.auth_enabled:
        env.append({"name": RAY_AUTH_MODE, "value": "token"})
        env.append({"name": RAY_AUTH_TOKEN, **token_ref(spec.secret_name)})
    env.extend({"name": k, "value": v} for k, v in sorted(spec.extra_env.items()))
    return env
