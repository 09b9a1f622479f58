"""``python -m rayspawner demo``: prints URL and login, Ctrl-C leaves no Ray process behind."""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from rayspawner.backends.local import MARKER_ROOT, SERVER_ROOT, find_processes
from rayspawner.localpaths import demo_temp_root
from tests.local_hub import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def test_demo_prints_login_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    port = free_port()
    token = secrets.token_hex(16)
    env = dict(os.environ, RAYSPAWNER_API_TOKEN=token, PYTHONUNBUFFERED="1")
    env.pop("RAYSPAWNER_DEMO_PASSWORD", None)
    out = tmp_path / "demo.log"
    with open(out, "wb") as f:
        demo = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "rayspawner",
                "demo",
                "--port",
                str(port),
                "--hub-api-port",
                str(free_port()),
                "--proxy-api-port",
                str(free_port()),
                "--state-dir",
                str(tmp_path / "state"),
            ],
            stdout=f,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=tmp_path,
            # SIGINT ignored, as for a command started with `&` from a script (or a CI runner):
            # the demo's Ctrl-C must work all the same
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
        )
    url, temp_root = f"http://127.0.0.1:{port}", demo_temp_root(port)
    api = lambda m, p, **kw: requests.request(
        m, f"{url}/hub/api{p}", headers={"Authorization": f"token {token}"}, timeout=30, **kw
    )  # noqa: E731
    try:
        deadline = time.monotonic() + 90
        while True:
            assert demo.poll() is None, out.read_text()
            try:
                if api("GET", "/").status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, out.read_text()
            time.sleep(0.5)
        text = out.read_text()
        assert url in text
        password = re.search(r"password: (\S+)", text).group(1)
        # the printed password logs in (any user name)
        browser = requests.Session()
        browser.get(f"{url}/hub/login", timeout=30)  # sets the _xsrf cookie the login form posts back
        login = browser.post(
            f"{url}/hub/login",
            allow_redirects=False,
            timeout=30,
            data={"username": "carol", "password": password, "_xsrf": browser.cookies.get("_xsrf", "")},
        )
        assert login.status_code == 302 and "/hub/login" not in login.headers.get("location", ""), login.status_code
        # a Ray server is running when Ctrl-C arrives
        assert api("POST", "/users/dave").status_code == 201
        assert api("POST", "/users/dave/server", json={"profile": "ray", "workers": "0"}).status_code in (201, 202)
        deadline = time.monotonic() + 300
        while not (api("GET", "/users/dave").json()["servers"].get("", {}).get("ready")):
            assert time.monotonic() < deadline, out.read_text()[-3000:]
            time.sleep(1)
        assert find_processes(MARKER_ROOT, temp_root), "no Ray processes found while running"
        assert find_processes(SERVER_ROOT, temp_root), "dave's notebook server is not marked"
        demo.send_signal(signal.SIGINT)
        try:
            code = demo.wait(180)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"Ctrl-C did not stop the demo:\n{out.read_text()[-3000:]}") from None
        assert code == 0, out.read_text()[-3000:]
        assert "no Ray processes left" in out.read_text()
        assert not find_processes(MARKER_ROOT, temp_root) and not find_processes(SERVER_ROOT, temp_root)
    finally:
        if demo.poll() is None:
            demo.kill()
        for key in (MARKER_ROOT, SERVER_ROOT):
            for p in find_processes(key, temp_root):
                p.kill()
