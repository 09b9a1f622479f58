"""JupyterHub config for local mode: every notebook server gets its own Ray cluster
as local processes (no Kubernetes). For a demo on your own machine.

    jupyterhub -f jupyterhub_config/local.py       # or: python -m rayspawner demo

Open http://127.0.0.1:8000 and log in with ANY user name and the demo password:
``$RAYSPAWNER_DEMO_PASSWORD`` if set, else a random one generated on first start,
printed at startup and kept in ``<state dir>/demo-password``. Pick the
"Ray: small CPU cluster" profile (slug ``ray``); in a notebook, ``ray.init()``
with no arguments connects to your own cluster.

Environment overrides (all optional):

- ``RAYSPAWNER_HUB_IP`` / ``RAYSPAWNER_HUB_PORT``: public address (127.0.0.1:8000);
- ``RAYSPAWNER_HUB_API_PORT``: the hub's internal API port (8081);
- ``RAYSPAWNER_PROXY_API_PORT``: configurable-http-proxy's API port (8001);
- ``RAYSPAWNER_STATE_DIR``: database, cookie secret, password, proxy pid file, user
  homes; by default this hub's own, keyed by its public port:
  ``$XDG_STATE_HOME/rayspawner/hub-<port>`` (``~/.local/state/rayspawner/hub-<port>``
  when ``XDG_STATE_HOME`` is unset). ``RAYSPAWNER_DB_URL`` overrides the database only;
- ``RAYSPAWNER_TEMP_ROOT``: where the Ray clusters' temp dirs go; by default this hub's
  own ``/tmp/rsp-<uid>-<port>`` (short: Ray's unix socket paths must stay under ~107
  characters);
- ``RAYSPAWNER_DEMO_PASSWORD``: the demo password;
- ``RAYSPAWNER_CONNECT_MODE``: ``driver`` (default: the kernel is a direct Ray driver,
  ``RAY_ADDRESS=127.0.0.1:<GCS port>``) or ``client`` (Ray Client, ``ray://``);
- ``RAYSPAWNER_API_TOKEN``: if set, a service ``rayspawner-admin`` with this API token
  and admin scopes (scripts and tests drive the hub's REST API with it);
- ``RAYSPAWNER_SHOW_GPU_PROFILE=0``: hide the GPU profile (by default it is shown,
  and refused with a clear message on a machine without GPUs).

Two hubs on one machine (different ports) therefore never share a database, a pid
file or a temp root. The state dir and the temp root are created with mode 0700; if
either exists and another account could control it (someone else owns it, it has
group/other permission bits, or it is a symlink), the hub refuses to start and says
which path and why.

Not for production: every user's notebook, kernels and Ray cluster run as the hub's
own user, so users can read each other's files and process environments (their
tokens included); the DummyAuthenticator accepts any name with the password. For
yourself, or users who trust each other.
"""

import importlib.util
import logging
import os
import secrets
import sys
from pathlib import Path

import rayspawner
from rayspawner.localpaths import UnsafePathError, demo_state_dir, demo_temp_root, private_dir

c = get_config()  # noqa: F821 - provided by JupyterHub

_here = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("rayspawner_example_profiles", _here / "profiles.py")
profiles = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(profiles)

env = os.environ.get

# --- network: loopback only ---
ip = env("RAYSPAWNER_HUB_IP", "127.0.0.1")
port = int(env("RAYSPAWNER_HUB_PORT", "8000"))

# --- this hub's own private state dir and Ray temp root (keyed by its port) ---
state_dir = Path(env("RAYSPAWNER_STATE_DIR") or demo_state_dir(port))
temp_root = env("RAYSPAWNER_TEMP_ROOT") or demo_temp_root(port)
try:
    private_dir(state_dir, "the hub's state directory (RAYSPAWNER_STATE_DIR)")
    private_dir(temp_root, "the local Ray temp root (RAYSPAWNER_TEMP_ROOT)")
except UnsafePathError as e:
    sys.exit(f"jupyterhub_config/local.py: {e}")  # SystemExit: JupyterHub stops with this line
c.JupyterHub.bind_url = f"http://{ip}:{port}"
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = int(env("RAYSPAWNER_HUB_API_PORT", "8081"))
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{int(env('RAYSPAWNER_PROXY_API_PORT', '8001'))}"
c.ConfigurableHTTPProxy.pid_file = str(state_dir / "proxy.pid")

# --- state ---
c.JupyterHub.db_url = env("RAYSPAWNER_DB_URL", f"sqlite:///{state_dir / 'jupyterhub.sqlite'}")
c.JupyterHub.cookie_secret_file = str(state_dir / "jupyterhub_cookie_secret")
c.JupyterHub.cleanup_servers = True  # stopping the hub stops every server and its Ray cluster

# --- demo login: any user name, one shared password ---
c.JupyterHub.authenticator_class = "dummy"
password = env("RAYSPAWNER_DEMO_PASSWORD")
if not password:
    pw_file = state_dir / "demo-password"
    if not pw_file.exists():
        with os.fdopen(os.open(pw_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
            f.write(secrets.token_urlsafe(12) + "\n")
    password = pw_file.read_text().strip()
    logging.getLogger("rayspawner.demo").warning(
        "Demo login: any user name, password %s (from %s; set RAYSPAWNER_DEMO_PASSWORD to choose one)",
        password,
        pw_file,
    )
c.DummyAuthenticator.password = password
c.Authenticator.allow_all = True
c.Authenticator.admin_users = {"admin"}

api_token = env("RAYSPAWNER_API_TOKEN")
if api_token:
    c.JupyterHub.services = [{"name": "rayspawner-admin", "api_token": api_token}]
    c.JupyterHub.load_roles = [
        {
            "name": "rayspawner-admin",
            "scopes": [
                "admin:users",
                "admin:servers",
                "tokens",
                "access:servers",
                "read:users",
                "list:users",
            ],  # admin:servers includes server state
            "services": ["rayspawner-admin"],
        }
    ]

# --- the spawner: a local notebook plus its own local Ray cluster ---
c.JupyterHub.spawner_class = "rayspawner.LocalRaySpawner"
# the home page lists each server's Ray cluster (size, dashboard link) and Stop asks first
c.JupyterHub.template_paths = [rayspawner.templates_path()]
c.LocalRaySpawner.home_dir_template = str(state_dir / "home" / "{username}")
c.LocalRaySpawner.local_temp_root = temp_root
c.LocalRaySpawner.start_timeout = 300  # a Ray head takes 3-30 s; heads boot one at a time; busy machines are slower
c.LocalRaySpawner.http_timeout = 90
c.LocalRaySpawner.ray_stop_timeout = 60
c.JupyterHub.allow_named_servers = True  # each named server gets its own Ray cluster
if env("RAYSPAWNER_CONNECT_MODE"):
    c.LocalRaySpawner.ray_connect_mode = env("RAYSPAWNER_CONNECT_MODE")
show_gpu = env("RAYSPAWNER_SHOW_GPU_PROFILE", "1") != "0"
c.LocalRaySpawner.profile_list = profiles.visible_profiles(gpus=None if show_gpu else 0, local=True)
for name, value in profiles.LIMITS.items():
    setattr(c.LocalRaySpawner, name, value)
if importlib.util.find_spec("jupyterlab"):
    c.LocalRaySpawner.default_url = "/lab"
