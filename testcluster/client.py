"""Synchronous helpers over the test cluster's API, for tests: objects, namespaces, hub accounts.

Requests go straight to the API server as cluster-admin (never through the fault proxy, so
they do not show in its request log).
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote, urlencode


from .kubeconfig import https_request, write_kubeconfig
from .pki import KeyPair

NODE_LABEL = "testcluster.rayspawner.test/pods"

#: plural -> (API prefix, namespaced)
RESOURCES: dict[str, tuple[str, bool]] = {
    **{r: ("/api/v1", True) for r in ("pods", "services", "secrets", "configmaps", "events", "endpoints")},
    **{r: ("/api/v1", True) for r in ("persistentvolumeclaims", "serviceaccounts", "resourcequotas", "limitranges")},
    **{r: ("/api/v1", False) for r in ("namespaces", "nodes", "persistentvolumes")},
    "deployments": ("/apis/apps/v1", True),
    "replicasets": ("/apis/apps/v1", True),
    "networkpolicies": ("/apis/networking.k8s.io/v1", True),
    "roles": ("/apis/rbac.authorization.k8s.io/v1", True),
    "rolebindings": ("/apis/rbac.authorization.k8s.io/v1", True),
    "clusterroles": ("/apis/rbac.authorization.k8s.io/v1", False),
    "clusterrolebindings": ("/apis/rbac.authorization.k8s.io/v1", False),
    "endpointslices": ("/apis/discovery.k8s.io/v1", True),
    "leases": ("/apis/coordination.k8s.io/v1", True),
    "rayclusters": ("/apis/ray.io/v1", True),
    "customresourcedefinitions": ("/apis/apiextensions.k8s.io/v1", False),
}
KINDS = {
    "Pod": "pods", "Service": "services", "Secret": "secrets", "ConfigMap": "configmaps",
    "ServiceAccount": "serviceaccounts", "Namespace": "namespaces", "PersistentVolumeClaim": "persistentvolumeclaims",
    "PersistentVolume": "persistentvolumes", "ResourceQuota": "resourcequotas", "LimitRange": "limitranges",
    "Deployment": "deployments", "ReplicaSet": "replicasets", "NetworkPolicy": "networkpolicies",
    "Role": "roles", "RoleBinding": "rolebindings", "ClusterRole": "clusterroles",
    "ClusterRoleBinding": "clusterrolebindings", "RayCluster": "rayclusters",
}  # fmt: skip


class ApiError(Exception):
    def __init__(self, code: int, body: Any) -> None:
        self.code = code
        self.body = body
        msg = body.get("message") if isinstance(body, dict) else body
        super().__init__(f"{code}: {msg}")


def path_of(resource: str, namespace: str | None = None, name: str | None = None, sub: str | None = None) -> str:
    prefix, namespaced = RESOURCES[resource]
    path = prefix + (f"/namespaces/{namespace}" if namespaced and namespace else "") + f"/{resource}"
    if name:
        path += f"/{quote(name)}"
    if sub:
        path += f"/{sub}"
    return path


class Client:
    """cluster-admin requests against ``server``."""

    def __init__(self, server: str, ca: Path, cert: KeyPair) -> None:
        self.server = server
        self.ca = ca
        self.cert = cert

    def call(self, method: str, path: str, body: Any = None, content_type: str = "application/json") -> Any:
        code, raw = https_request(method, self.server + path, self.ca, self.cert, body, content_type=content_type)
        doc = json.loads(raw) if raw else None
        if code >= 400:
            raise ApiError(code, doc)
        return doc

    def get_object(self, resource: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        try:
            return self.call("GET", path_of(resource, namespace, name))
        except ApiError as e:
            if e.code == 404:
                return None
            raise

    def list_objects(
        self, resource: str, namespace: str | None = None, label_selector: str = "", field_selector: str = ""
    ) -> list[dict[str, Any]]:
        q = {k: v for k, v in (("labelSelector", label_selector), ("fieldSelector", field_selector)) if v}
        path = path_of(resource, namespace) + (f"?{urlencode(q)}" if q else "")
        return self.call("GET", path).get("items") or []

    def create_object(self, obj: dict[str, Any], namespace: str | None = None) -> dict[str, Any]:
        resource = KINDS[obj["kind"]]
        ns = namespace or (obj.get("metadata") or {}).get("namespace")
        return self.call("POST", path_of(resource, ns), obj)

    def patch_object(
        self, resource: str, namespace: str | None, name: str, patch: Any, sub: str | None = None
    ) -> dict[str, Any]:
        kind = "application/json-patch+json" if isinstance(patch, list) else "application/merge-patch+json"
        return self.call("PATCH", path_of(resource, namespace, name, sub), patch, content_type=kind)

    def delete_object(
        self,
        resource: str,
        namespace: str | None,
        name: str,
        grace_period_seconds: int | None = None,
        propagation: str = "Background",
    ) -> bool:
        body: dict[str, Any] = {"propagationPolicy": propagation}
        if grace_period_seconds is not None:
            body["gracePeriodSeconds"] = grace_period_seconds
        try:
            self.call("DELETE", path_of(resource, namespace, name), body)
            return True
        except ApiError as e:
            if e.code == 404:
                return False
            raise

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
            time.sleep(0.05)

    # -- namespaces and accounts ----------------------------------------------------
    def create_namespace(self, prefix: str = "t", pss: str = "restricted", node: str = "sim") -> str:
        """A fresh namespace whose pods must pass Pod Security ``pss`` (enforced by admission)
        and run on the ``node`` agent ("sim" or "process"; the PodNodeSelector plugin)."""
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        labels = {
            "pod-security.kubernetes.io/enforce": pss,
            "pod-security.kubernetes.io/enforce-version": "latest",
        }
        annotations = {"scheduler.alpha.kubernetes.io/node-selector": f"{NODE_LABEL}={node}"}
        self.call(
            "POST", "/api/v1/namespaces", {"metadata": {"name": name, "labels": labels, "annotations": annotations}}
        )
        return name

    def delete_namespace(self, name: str) -> None:
        try:
            self.call("DELETE", f"/api/v1/namespaces/{name}", {"propagationPolicy": "Background"})
        except ApiError as e:
            if e.code != 404:
                raise

    def service_account_token(self, namespace: str, name: str, seconds: int = 3600) -> str:
        """A bound token for a ServiceAccount (created if missing), through TokenRequest."""
        if self.get_object("serviceaccounts", namespace, name) is None:
            self.create_object({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}}, namespace)
        req = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": seconds}}
        doc = self.call("POST", path_of("serviceaccounts", namespace, name, "token"), req)
        return doc["status"]["token"]

    def token_kubeconfig(self, path: Path, token: str, server: str | None = None, namespace: str = "") -> Path:
        return write_kubeconfig(path, server or self.server, self.ca, token=token, namespace=namespace)
