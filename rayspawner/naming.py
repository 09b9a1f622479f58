"""Every name and label rayspawner gives an object lives here.

Admins script against these, so they are stable:

- labels ``app.kubernetes.io/managed-by=rayspawner``,
  ``app.kubernetes.io/component=ray-head|ray-worker``, ``ray.io/cluster=<name>``,
  ``hub.jupyter.org/username``, ``hub.jupyter.org/servername``;
- the head Service ``<name>-head-svc``.
"""

from __future__ import annotations

import base64
import hashlib
import re
import string

from kubespawner.slugs import _extract_safe_name, is_valid_default, is_valid_label, safe_slug

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
_LITERAL = re.compile(r"^[a-z0-9-]*$")
#: an escaped name ends in "---" and this many base32 characters (80 bits of SHA-256):
#: a colliding user name cannot be searched for offline, as a 32-bit hash can be
HASH_CHARS = 16
_PREFIX_MAX = MAX_CLUSTER_NAME - HASH_CHARS - 3
#: KubeSpawner's own join of the two names; it means the same as {user_server}
_JOINED = "{username}--{servername}"


def check_template(template: str) -> str:
    """Refuse a ``ray_cluster_name_template`` that could give two user-servers one name.

    Accepted: exactly one ``{user_server}`` (or ``{username}--{servername}``, the same
    thing) and literal text of lowercase letters, digits and single hyphens. Anything
    else could map two users, or a user and another user's named server, to the same
    name, and so to the same Secret, pods and NetworkPolicy: ``ray-{username}`` gives
    every server of alice one cluster, and ``ray-{username}-{servername}`` gives user
    ``alice-x`` the cluster of alice's server ``x``. Returns the template.
    """
    where = f"ray_cluster_name_template {template!r}"
    fix = "use {user_server}, e.g. the default 'ray-{user_server}'"
    try:
        parts = list(string.Formatter().parse(template.replace(_JOINED, "{user_server}")))
    except ValueError as e:
        raise ConfigError(f"{where} is invalid ({e}); {fix}.") from None
    fields = []
    for literal, field, spec, conversion in parts:
        if not _LITERAL.match(literal) or "--" in literal:
            raise ConfigError(
                f"{where}: its fixed text may only hold lowercase letters, digits and single hyphens "
                f"(got {literal!r}), so that no two users' names can render alike; {fix}."
            )
        if field is not None:
            if field not in ("user_server", "username", "servername"):
                raise ConfigError(f"{where} uses an unknown field {{{field}}}; {fix}.")
            if field != "user_server" or spec or conversion:
                raise ConfigError(
                    f"{where} uses {{{field}{'!' + conversion if conversion else ''}{':' + spec if spec else ''}}}: "
                    "only {user_server} (or {username}--{servername}) tells every user and server apart "
                    "(with {username}-{servername}, user 'alice-x' would get the cluster of alice's "
                    f"server 'x'); {fix}."
                )
            fields.append(field)
    if len(fields) != 1:
        raise ConfigError(f"{where} must contain {{user_server}} exactly once; {fix}.")
    return template


def _plain(name: str) -> bool:
    """A name KubeSpawner's slugs keep as it is (so its rendering is unambiguous)."""
    return "--" not in name and is_valid_default(name)


def cluster_name(template: str, username: str, servername: str = "") -> str:
    """The cluster name for one user-server, from ``ray_cluster_name_template``.

    Distinct user-servers always get distinct names. Where both names are already
    DNS-safe (no ``--``) and the result fits in :data:`MAX_CLUSTER_NAME` characters it is
    the template filled in (``ray-alice``, ``ray-alice--dev``: ``{user_server}`` is
    KubeSpawner's ``user--server``). Otherwise it is a readable prefix, ``---`` and an
    80-bit hash of the template and the raw names, which a plain name never contains
    (the template's text has no ``--`` and plain names have none).
    """
    check_template(template)
    if _plain(username) and (not servername or _plain(servername)):
        user_server = f"{username}--{servername}" if servername else username
        rendered = template.replace(_JOINED, "{user_server}").format(user_server=user_server).strip("-")
        if _DNS1035.match(rendered) and len(rendered) <= MAX_CLUSTER_NAME:
            return rendered
    hasher = hashlib.sha256(template.encode("utf8"))
    for part in (username, servername):
        hasher.update(b"\xff")  # never in UTF-8: no two (user, server) pairs feed the same bytes
        hasher.update(part.encode("utf8"))
    digest = base64.b32encode(hasher.digest()).decode("ascii").lower()[:HASH_CHARS]
    readable = template.replace(_JOINED, "{user_server}").format(
        user_server=f"{username}-{servername}" if servername else username
    )
    return f"{_extract_safe_name(readable, _PREFIX_MAX)}---{digest}"


def head_service(cluster: str) -> str:
    return f"{cluster}-head-svc"


def head_pod(cluster: str) -> str:
    return f"{cluster}-head"


def worker_deployment(cluster: str, group: str) -> str:
    """``<cluster>-workers``, ``<cluster>-gpuworkers``: no suffix of one cluster's object
    names ends in another's (``ray-alice-gpu-workers`` would be both alice's GPU group and
    user alice-gpu's workers)."""
    return f"{cluster}-{group.replace('-', '')}"


def token_secret(cluster: str) -> str:
    return f"{cluster}-ray-token"


def network_policy(cluster: str) -> str:
    return f"{cluster}-ray"


#: key of the token inside the Secret (the key KubeRay's authOptions reads too)
TOKEN_KEY = "auth_token"


def notebook_network_policy(cluster: str) -> str:
    """The policy that opens the notebook pod for its own cluster's Ray traffic."""
    return f"{cluster}-notebook"


def api_server_network_policy(cluster: str) -> str:
    """KubeRay autoscaling: the policy that lets the head pod (its autoscaler) reach the API server."""
    return f"{cluster}-apiserver"


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


MANAGED_SELECTOR = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
