"""``python -m rayspawner demo``: the local demo hub (LocalRaySpawner) on 127.0.0.1:8000.

Runs ``jupyterhub -f jupyterhub_config/local.py`` in its own session, prints the
URL and how to log in, and on Ctrl-C (or SIGTERM) stops the hub — which stops
every server and its Ray cluster — then kills anything of the demo's clusters
still alive (found by the marker every Ray process of the demo inherits), so
no Ray process is left behind.

State and Ray temp root are this hub's own, keyed by its public port
(:mod:`rayspawner.localpaths`): ``$XDG_STATE_HOME/rayspawner/hub-<port>``
(``~/.local/state/...``) and ``/tmp/rsp-<uid>-<port>``. Both are created with mode
0700, or refused before anything starts if another account could control them.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from .backends.local import kill_everything_under
from .localpaths import UnsafePathError, demo_state_dir, demo_temp_root, private_dir

log = logging.getLogger("rayspawner.demo")
REPO_CONFIG = Path(__file__).resolve().parents[1] / "jupyterhub_config" / "local.py"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rayspawner demo", description="Run the local demo hub: each user server gets its own Ray cluster."
    )
    p.add_argument("--ip", default="127.0.0.1", help="public IP (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="public port (default 8000)")
    p.add_argument("--hub-api-port", type=int, default=8081, help="the hub's internal API port (default 8081)")
    p.add_argument("--proxy-api-port", type=int, default=8001, help="the proxy's API port (default 8001)")
    p.add_argument(
        "--state-dir",
        default=None,
        help="database, cookie secret, password, pid file, user homes "
        "(default: $XDG_STATE_HOME/rayspawner/hub-<port>, else ~/.local/state/rayspawner/hub-<port>)",
    )
    p.add_argument("--config", default=str(REPO_CONFIG), help="JupyterHub config (default: jupyterhub_config/local.py)")
    return p


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(levelname).1s %(asctime)s %(name)s] %(message)s")
    config = Path(args.config)
    if not config.is_file():
        print(
            f"rayspawner demo: config {config} not found. Run from a clone of the repository "
            "(pip install -e '.[local]'), or pass --config PATH.",
            file=sys.stderr,
        )
        return 2
    if not shutil.which("configurable-http-proxy"):
        print(
            "rayspawner demo: configurable-http-proxy is not on PATH; install it with "
            "`npm install -g configurable-http-proxy`.",
            file=sys.stderr,
        )
        return 2
    state_dir = args.state_dir or str(demo_state_dir(args.port))
    temp_root = demo_temp_root(args.port)  # short (Ray socket paths) and only this demo's clusters
    try:
        private_dir(state_dir, "the demo's state directory (--state-dir)")
        private_dir(temp_root, "the demo's Ray temp root")
    except UnsafePathError as e:
        print(f"rayspawner demo: {e}", file=sys.stderr)
        return 2
    password = os.environ.get("RAYSPAWNER_DEMO_PASSWORD") or secrets.token_urlsafe(9)
    env = dict(os.environ)
    env.update(
        {
            "RAYSPAWNER_HUB_IP": args.ip,
            "RAYSPAWNER_HUB_PORT": str(args.port),
            "RAYSPAWNER_HUB_API_PORT": str(args.hub_api_port),
            "RAYSPAWNER_PROXY_API_PORT": str(args.proxy_api_port),
            "RAYSPAWNER_STATE_DIR": state_dir,
            "RAYSPAWNER_TEMP_ROOT": temp_root,
            "RAYSPAWNER_DEMO_PASSWORD": password,
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
        }
    )
    url = f"http://{args.ip}:{args.port}"
    print(
        f"\n  rayspawner demo: JupyterHub at {url}\n"
        f"  Log in with any user name and the password: {password}\n"
        f'  Choose "Ray: small CPU cluster"; in a notebook, ray.init() connects to your own cluster.\n'
        f"  Press Ctrl-C to stop (every server and Ray cluster is shut down).\n",
        flush=True,
    )
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    # Ctrl-C must stop the demo even where SIGINT came in ignored (started with `&` from a
    # script: Python then installs no KeyboardInterrupt handler)
    previous_int = signal.signal(signal.SIGINT, _raise_interrupt)
    hub = subprocess.Popen([sys.executable, "-m", "jupyterhub", "-f", str(config)], env=env, start_new_session=True)
    code = 0
    try:
        code = hub.wait()
        log.error("the hub exited with code %s", code)
    except KeyboardInterrupt:
        print("\n  Stopping the hub, its servers and their Ray clusters ...", flush=True)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip the cleanup
        hub.send_signal(signal.SIGTERM)  # JupyterHub stops every server (cleanup_servers)
        try:
            hub.wait(120)
        except subprocess.TimeoutExpired:
            log.warning("the hub did not stop in 120 s; killing it")
            os.killpg(hub.pid, signal.SIGKILL)
            hub.wait()
    finally:
        left = asyncio.run(kill_everything_under(temp_root, timeout=30))
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
    if left:
        print(f"  Warning: processes could not be stopped: {sorted(left)}", flush=True)
        return 1
    shutil.rmtree(temp_root, ignore_errors=True)
    print("  Stopped; no Ray processes left.", flush=True)
    return code if code and code > 0 else 0


if __name__ == "__main__":
    sys.exit(main())
