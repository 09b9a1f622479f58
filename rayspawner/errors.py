"""The one exception type that carries a message meant for the user.

Anything raised as :class:`RaySpawnerError` is shown as-is on the spawn page,
returned as the REST API's error message and logged; nothing else about the
failure (tracebacks, API bodies) reaches the user. It subclasses tornado's
``HTTPError`` so JupyterHub relays its status code (400 for bad input), logs
it as one line without a traceback, and (below 500) does not count it towards
``consecutive_failure_limit``.
"""

from __future__ import annotations

from tornado import web


class RaySpawnerError(web.HTTPError):
    """A failure with a message a user or admin can act on."""

    status = 500
    #: short machine-readable reason, used as a metrics label
    reason_label = "error"

    def __init__(self, message: str, *, status: int | None = None, reason: str | None = None):
        code = status if status is not None else self.status
        # tornado uses log_message for logs; JupyterHub shows jupyterhub_message to the user
        super().__init__(code, "%s", message)
        self.message = message
        self.jupyterhub_message = message
        if reason:
            self.reason_label = reason

    def __str__(self) -> str:
        return self.message


class InvalidOptions(RaySpawnerError, ValueError):
    """The user's choices (or the admin's profile) are invalid or over a limit.

    Raised before anything is created. Also a ``ValueError``: KubeSpawner's
    ``load_user_options`` raises ValueError for bad options and its callers
    (and upstream's tests) catch that; as an ``HTTPError`` it is still a 400
    with this message on the spawn page and in the REST API.
    """

    status = 400
    reason_label = "invalid_options"


class ConfigError(RaySpawnerError):
    """The hub's rayspawner configuration is wrong; an admin must fix it."""

    status = 500
    reason_label = "config"


class ClusterStartError(RaySpawnerError):
    """The Ray cluster did not come up (unschedulable, image pull, quota, RBAC, ...)."""

    status = 500
    reason_label = "cluster_start"
