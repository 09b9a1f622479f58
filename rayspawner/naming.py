"""Every name and label rayspawner gives an object lives here.

Admins script against these, so they are stable:

- labels ``app.kubernetes.io/managed-by=rayspawner``,
  ``app.kubernetes.io/component=ray-head|ray-worker``, ``ray.io/cluster=<name>``,
  ``hub.jupyter.org/username``, ``hub.jupyter.org/servername``;
- the head Service ``<name>-head-svc``.
"""

from __future__ import annotations

import re

from kubespawner.slugs import is_valid_label, multi_slug, safe_slug

from .errors import ConfigError

MANAGED_BY = "rayspawner"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_CLUSTER = "ray.io/cluster"
LABEL_USERNAME = "hub.jupyter.org/username"
LABEL_SERVERNAME = "hub.jupyter.org/servername"
LABEL_GROUP = "rayspawner.io/group"
COMPONENT_HEAD = "ray-head"
COMPONENT_WORKER = "ray-worker"

#: the longest cluster name: leaves room for "-head-svc" (a 63-char DNS-1035
#: Service name) and for Deployment/ReplicaSet/pod suffixes of worker pods.
MAX_CLUSTER_NAME = 40
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_SLUG_MAX = 48


def cluster_name(template: str, username: str, servername: str = "") -> str:
    """The cluster name for one user-server, from ``ray_cluster_name_template``.

    The template may use ``{username}``, ``{servername}`` and ``{user_server}``
    (escaped as KubeSpawner's "safe" slug scheme does). The result is a DNS-1035
    label of at most :data:`MAX_CLUSTER_NAME` characters; a name that must be
    shortened keeps a hash of the full name, so two users never share one.
    """
    safe_user = safe_slug(username, max_length=_SLUG_MAX)
    safe_server = safe_slug(servername, max_length=_SLUG_MAX) if servername else ""
    if servername:
        if len(safe_user) + len(safe_server) + 2 > _SLUG_MAX:
            user_server = multi_slug([username, servername], max_length=_SLUG_MAX)
        else:
            user_server = f"{safe_user}--{safe_server}"
    else:
        user_server = safe_user
    try:
        rendered = template.format(username=safe_user, servername=safe_server, user_server=user_server)
    except (KeyError, IndexError, ValueError) as e:
        raise ConfigError(
            f"ray_cluster_name_template {template!r} is invalid ({e}); "
            "use {username}, {servername} or {user_server}."
        ) from None
    rendered = rendered.strip("-").lower()
    if servername and safe_server not in rendered and user_server not in rendered:
        raise ConfigError(
            f"ray_cluster_name_template {template!r} does not include {{servername}} or "
            "{user_server}: named servers of one user would share a cluster."
        )
    if not _DNS1035.match(rendered) or len(rendered) > MAX_CLUSTER_NAME:
        rendered = safe_slug(rendered, max_length=MAX_CLUSTER_NAME)
        if not rendered[0].isalpha():
            rendered = safe_slug("ray-" + rendered, max_length=MAX_CLUSTER_NAME)
    return rendered


def head_service(cluster: str) -> str:
    return f"{cluster}-head-svc"


def head_pod(cluster: str) -> str:
    return f"{cluster}-head"


def worker_deployment(cluster: str, group: str) -> str:
    return f"{cluster}-{group}"


def token_secret(cluster: str) -> str:
    return f"{cluster}-ray-token"


def network_policy(cluster: str) -> str:
    return f"{cluster}-ray"


#: key of the token inside the Secret (the key KubeRay's authOptions reads too)
TOKEN_KEY = "auth_token"


def notebook_network_policy(cluster: str) -> str:
    """The policy that opens the notebook pod for its own cluster's Ray traffic."""
    return f"{cluster}-notebook"


def label_value(value: str) -> str:
    """A label-safe rendering of a user or server name, exactly as KubeSpawner
    labels the notebook pod (so selectors can match both)."""
    return safe_slug(value, is_valid=is_valid_label)


def cluster_labels(cluster: str, username: str, servername: str) -> dict[str, str]:
    """Labels every object of one Ray cluster carries."""
    return {
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_CLUSTER: cluster,
        LABEL_USERNAME: label_value(username),
        LABEL_SERVERNAME: label_value(servername),
    }


def cluster_selector(cluster: str) -> str:
    """A labelSelector string matching every object of one cluster."""
    return f"{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_CLUSTER}={cluster}"


MANAGED_SELECTOR = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
