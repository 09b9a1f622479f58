"""Check, in a notebook, that this server's Ray cluster is reachable and accepts its token.

Why: Ray Client (``ray.init()`` with ``RAY_ADDRESS=ray://…``) reports a *missing* token at
once (``AuthenticationError``), but a *wrong* token only after about 30 s, as
``ConnectionError: ray client connection timeout`` — the same message as an unreachable
head. The head's dashboard answers at once: 401 for a missing or wrong token. So::

    from rayspawner.raycheck import init   # check, then ray.init(**kwargs)
    init()

or, from a terminal, ``python -m rayspawner.raycheck`` (exit 0: usable; 1: a message
saying what is wrong). Standard library only (the notebook image installs rayspawner
with ``--no-deps``); it never prints the token.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from typing import Any

# the names rayspawner.env sets (not imported from there: it needs kubespawner)
RAY_DASHBOARD_URL = "RAY_DASHBOARD_URL"
RAY_API_SERVER_ADDRESS = "RAY_API_SERVER_ADDRESS"
RAY_AUTH_MODE = "RAY_AUTH_MODE"
RAY_AUTH_TOKEN = "RAY_AUTH_TOKEN"

TIMEOUT = 10.0


class RayAccessError(RuntimeError):
    """This process cannot use its Ray cluster; the message says why and what to do."""


def check(timeout: float = TIMEOUT, environ: dict[str, str] | None = None) -> dict[str, Any]:
    """Ask the head's dashboard for its version with this process's token.

    Returns the dashboard's ``/api/version`` answer; raises :class:`RayAccessError`
    with an actionable message if the head is unreachable or refuses the token.
    """
    env = os.environ if environ is None else environ
    base = (env.get(RAY_DASHBOARD_URL) or env.get(RAY_API_SERVER_ADDRESS) or "").rstrip("/")
    if not base:
        raise RayAccessError(
            f"No Ray cluster is attached to this server ({RAY_DASHBOARD_URL} is not set): "
            "start your server with a Ray profile."
        )
    token = env.get(RAY_AUTH_TOKEN) or ""
    request = urllib.request.Request(f"{base}/api/version")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:  # noqa: S310 - http(s) URL from the spawner
            body = r.read()
    except urllib.error.HTTPError as e:
        if e.code in (401, 403) and not token:
            raise RayAccessError(
                f"The Ray cluster at {base} requires a token, but {RAY_AUTH_TOKEN} is not set in this "
                f"process (the notebook server sets {RAY_AUTH_MODE}=token and {RAY_AUTH_TOKEN}; "
                "do not unset them). Restart the kernel, or stop and start your server."
            ) from None
        if e.code in (401, 403):
            raise RayAccessError(
                f"The Ray cluster at {base} rejected the token in {RAY_AUTH_TOKEN} (HTTP {e.code}): it is "
                "not this cluster's token. The cluster was probably recreated after this process started; "
                "restart the kernel, or stop and start your server."
            ) from None
        raise RayAccessError(f"The Ray dashboard at {base} answered HTTP {e.code} {e.reason}.") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise RayAccessError(
            f"Cannot reach the Ray head at {base} ({reason}). It may still be starting or be gone "
            "(see your server's page in the hub), or a NetworkPolicy blocks this pod's egress to it."
        ) from None
    try:
        return json.loads(body)
    except ValueError:
        return {}


def init(*args: Any, **kwargs: Any) -> Any:
    """:func:`check`, then ``ray.init(*args, **kwargs)``."""
    check()
    import ray

    return ray.init(*args, **kwargs)


def main(argv: list[str] | None = None) -> int:
    try:
        info = check()
    except RayAccessError as e:
        print(f"rayspawner: {e}", file=sys.stderr)
        return 1
    version = info.get("ray_version") or info.get("version") or "?"
    url = os.environ.get(RAY_DASHBOARD_URL) or os.environ.get(RAY_API_SERVER_ADDRESS)
    print(f"OK: Ray {version} at {url} accepts this process's token; ray.init() will connect.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
