"""No Ray token value leaks: not in any log record of a spawn (root logger at DEBUG, the
spawner's log, tornado, kubernetes_asyncio, aiohttp), not in progress messages, not in the
hub state, not in any object but the Secret (pod env values, annotations, RayCluster,
events...), not in ``rayspawner render`` output; LocalRaySpawner: not in its log or state.

The token is read back from the Secret in the real test cluster and searched for in its raw
and base64 forms. Records of the test cluster's fault proxy (which runs in this process, between
the hub and the API server, and is no part of the hub) are excluded.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import subprocess
import sys
from contextlib import contextmanager
from typing import Any, Iterator

import pytest
import yaml

from rayspawner import naming
from rayspawner import secretlog

LOGGERS = [
    "",
    "traitlets",
    "JupyterHub",
    "rayspawner",
    "kubespawner",
    "tornado",
    "tornado.application",
    "tornado.general",
    "kubernetes_asyncio",
    "kubernetes_asyncio.client.rest",
    "aiohttp",
    "asyncio",
]
RAY = {"profile": "ray", "workers": "2"}


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.threadName == "testcluster-faultproxy" or record.name.startswith("testcluster"):
            return  # the test cluster's proxy in front of the API server, not the hub
        self.lines.append(self.format(record))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@contextmanager
def capture_all_logs(*spawners: Any) -> Iterator[Capture]:
    handler = Capture()
    loggers = [logging.getLogger(n) for n in LOGGERS] + [sp.log for sp in spawners]
    saved = [(lg, lg.level) for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.DEBUG)
    root = logging.getLogger()
    root.addHandler(handler)
    extra = [sp.log for sp in spawners if not sp.log.propagate]
    for lg in extra:
        lg.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        for lg in extra:
            lg.removeHandler(handler)
        for lg, level in saved:
            lg.setLevel(level)


def forms(token: str) -> list[str]:
    """The token as it could appear: raw, base64 (Secret data), and base64 without padding."""
    b64 = base64.b64encode(token.encode()).decode()
    return [token, b64, b64.rstrip("=")]


def leaks(text: str, tokens: list[str]) -> list[str]:
    return [f for t in tokens for f in forms(t) if f in text]


def dump_objects(kube: Any, kuberay_on: bool) -> str:
    kinds = ["pods", "services", "deployments", "replicasets", "networkpolicies", "events", "configmaps"]
    if kuberay_on:
        kinds.append("rayclusters")
    return json.dumps({k: kube.list_objects(k, kube.ns) for k in kinds})


@pytest.mark.asyncio
@pytest.mark.parametrize("backend", ["pods", "kuberay"])
async def test_no_token_in_logs_state_or_objects(backend, kube, ray_spawner_factory):
    # the orphan sweep runs during the spawn too: it lists the namespace's Secrets
    traits = dict(ray_backend=backend, ray_orphan_sweep_interval=1, ray_orphan_grace_seconds=3600)
    alice = ray_spawner_factory(kube, "alice", **traits)
    bob = ray_spawner_factory(kube, "bob", **traits)
    with capture_all_logs(alice, bob) as logs:
        for sp in (alice, bob):
            sp.user_options = dict(RAY)
        await asyncio.wait_for(asyncio.gather(alice.start(), bob.start()), 30)
        progress = [e async for e in alice.progress()]
        await asyncio.sleep(1.5)  # one more sweep, with both Secrets present
        tokens = []
        for sp in (alice, bob):
            secret = kube.get_object("secrets", kube.ns, naming.token_secret(sp.ray_session.spec.name))
            tokens.append(base64.b64decode(secret["data"][naming.TOKEN_KEY]).decode())
        state = alice.get_state()
        objects = dump_objects(kube, backend == "kuberay")
        # a hub restart: a new spawner from the state polls and stops the server
        again = ray_spawner_factory(kube, "alice", **traits)
        again.load_state(state)
        assert await again.poll() is None
        await asyncio.wait_for(asyncio.gather(again.stop(), bob.stop()), 30)

    assert len(set(tokens)) == 2 and all(len(t) >= 32 for t in tokens)
    assert "response body" in logs.text and "ray-alice" in logs.text  # DEBUG really was captured
    assert leaks(logs.text, tokens) == [], [ln for ln in logs.lines if leaks(ln, tokens)][:3]
    assert leaks(json.dumps(progress), tokens) == []
    assert leaks(json.dumps(state), tokens) == [] and state["ray_cluster"]["name"] == "ray-alice"
    assert leaks(objects, tokens) == []
    # the token travels to pods only as a secretKeyRef
    pods = json.loads(objects)["pods"]
    for pod in pods:
        for c in pod["spec"].get("containers", []) + pod["spec"].get("initContainers", []):
            for e in c.get("env") or []:
                if e["name"] == "RAY_AUTH_TOKEN":
                    assert "value" not in e and e["valueFrom"]["secretKeyRef"]["key"] == naming.TOKEN_KEY
    assert any(e["name"] == "RAY_AUTH_TOKEN" for p in pods for c in p["spec"]["containers"] for e in c.get("env") or [])


def test_secret_redaction_filter_covers_secret_bodies():
    """The filter rayspawner puts on kubernetes_asyncio's body logging (the fix for the leak found above)."""
    secretlog.install_secret_log_redaction()
    secretlog.install_secret_log_redaction()  # idempotent
    rest = logging.getLogger("kubernetes_asyncio.client.rest")
    assert sum(isinstance(f, secretlog.SecretBodyRedactor) for f in rest.filters) == 1
    handler = Capture()
    rest.addHandler(handler)
    level = rest.level
    rest.setLevel(logging.DEBUG)
    try:
        one = {
            "kind": "Secret",
            "apiVersion": "v1",
            "metadata": {"name": "s"},
            "data": {"k": "c2VrcmV0"},
            "stringData": {"x": "plain"},
        }
        many = {"kind": "SecretList", "items": [dict(one, kind=None)]}
        rest.debug("response body: %s", json.dumps(one).encode())
        rest.debug("response body: %s", json.dumps(many))
        rest.debug("response body: %s", b"not json, Secret c2VrcmV0")
        rest.debug("response body: %s", json.dumps({"kind": "Pod", "metadata": {"name": "p"}}).encode())
    finally:
        rest.removeHandler(handler)
        rest.setLevel(level)
    assert "c2VrcmV0" not in handler.text and "plain" not in handler.text, handler.text
    assert handler.text.count("<redacted>") >= 3 and '"name": "p"' in handler.text


def test_render_output_has_no_secret(tmp_path):
    config = tmp_path / "jupyterhub_config.py"
    config.write_text(
        "c.RaySpawner.profile_list = [{'display_name': 'Ray', 'slug': 'ray', "
        "'kubespawner_override': {'ray_enabled': True}}]\n"
    )
    text, docs = "", []
    for backend in ("pods", "kuberay"):
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "rayspawner",
                "render",
                "-f",
                str(config),
                "--user",
                "alice",
                "--profile",
                "ray",
                "--backend",
                backend,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        text += done.stdout + done.stderr
        docs += [d for d in yaml.safe_load_all(done.stdout) if d]
    secrets_out = [d for d in docs if d["kind"] == "Secret"]
    assert len(secrets_out) == 2 and all(set(s["data"].values()) == {"<redacted>"} for s in secrets_out)
    assert all("stringData" not in s for s in secrets_out)
    # nothing token-shaped anywhere (the real token is a 43-character urlsafe string)
    assert not re.search(r"(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{43}(?![A-Za-z0-9_-])", text)
    envs = [
        e
        for d in docs
        if d["kind"] in ("Pod", "Deployment")
        for c in (d["spec"].get("template", {}).get("spec") or d["spec"])["containers"]
        for e in c.get("env") or []
    ]
    tokens = [e for e in envs if e["name"] == "RAY_AUTH_TOKEN"]
    assert tokens and all("value" not in e for e in tokens)
    cluster = next(d for d in docs if d["kind"] == "RayCluster")
    assert cluster["spec"]["authOptions"] == {"mode": "token", "secretName": "ray-alice-ray-token"}


@pytest.mark.asyncio
async def test_local_spawner_log_and_state(tmp_path):
    """LocalRaySpawner: the token exists only in the cluster object (and the notebook's env)."""
    from rayspawner.local_spawner import LocalRaySpawner

    class User:
        name = "alice"
        url = "/user/alice/"

    sp = LocalRaySpawner(
        profile_list=[
            {
                "display_name": "Ray",
                "slug": "ray",
                "default": True,
                "kubespawner_override": {"ray_enabled": True, "ray_worker_replicas": 1},
            }
        ],
        local_gpus=0,
        local_temp_root=str(tmp_path / "rsp"),
    )
    sp.user = User()
    with capture_all_logs(sp) as logs:
        sp.user_options = {"profile": "ray"}
        await sp.load_user_options()
        await sp.backend.prepare(sp.ray_session.spec)  # what start() does first (no processes)
        cluster = sp.backend.cluster(sp.ray_session.spec)
        sp._server_marker = "m"
        token = cluster.token
        state = sp.get_state()
        env = sp.backend.notebook_env(sp.ray_session.spec)  # what get_env() adds for the notebook
        sp.log.debug("spawner repr %r cluster %r", sp, cluster)
    try:
        assert token and env["RAY_AUTH_TOKEN"] == token  # the notebook process gets it (local mode's only channel)
        assert leaks(logs.text, [token]) == [] and "ray-alice" in logs.text
        assert leaks(json.dumps(state), [token]) == []
        on_disk = "".join(p.read_text(errors="replace") for p in (tmp_path / "rsp").rglob("*") if p.is_file())
        assert leaks(on_disk, [token]) == []
    finally:
        await sp.backend.delete(sp.ray_session.spec, 10)
