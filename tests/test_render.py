"""`python -m rayspawner render`: every object a spawn creates, offline, valid, redacted."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from .bad_inputs import BAD_INPUTS, LIMITS, PROFILES

K8S_VERSION = "1.33"
# bad inputs expressible on a command line (string values, a profile slug)
RENDERABLE = [
    b
    for b in BAD_INPUTS
    if isinstance(b[1].get("profile"), str) and all(isinstance(v, str) and "\n" not in v for v in b[1].values())
][:5]


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("render") / "jupyterhub_config.py"
    lines = [
        'c.KubeSpawner.namespace = "jhub"',
        'c.KubeSpawner.image = "quay.io/rayspawner/notebook:2.60.0"',
        f"c.KubeSpawner.profile_list = {PROFILES!r}",
        *(f"c.RaySpawner.{k} = {v!r}" for k, v in LIMITS.items()),
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def render(config: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    env["KUBECONFIG"] = "/nonexistent/kubeconfig"  # render must not need (or contact) a cluster
    return subprocess.run(
        [sys.executable, "-m", "rayspawner", "render", "-f", str(config), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


@pytest.mark.parametrize("backend", ["pods", "kuberay"])
def test_render_prints_every_object_valid(config, backend):
    out = render(config, "--user", "alice", "--profile", "ray", "--option", "workers=2", "--backend", backend)
    assert out.returncode == 0, out.stderr
    docs = list(yaml.safe_load_all(out.stdout))
    kinds = [d["kind"] for d in docs]
    # the cluster's policy and the notebook side's (rendered as for an isolated notebook, as under z2jh)
    expected = ["Pod", "Secret", "NetworkPolicy", "NetworkPolicy"] + (
        ["Service", "Pod", "Deployment"] if backend == "pods" else ["RayCluster"]
    )
    assert sorted(kinds) == sorted(expected)
    for d in docs:
        if d["kind"] != "RayCluster":
            kubernetes_validate.validate(d, K8S_VERSION, strict=True)
    secret = next(d for d in docs if d["kind"] == "Secret")
    assert set(secret["data"].values()) == {"<redacted>"}
    notebook = docs[0]
    env = {e["name"]: e for e in notebook["spec"]["containers"][0]["env"]}
    # driver mode (the default): a direct driver through the notebook's own Ray node, a sidecar
    assert env["RAY_ADDRESS"]["value"] == "ray-alice-head-svc.jhub.svc.cluster.local:6379"
    assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "ray-alice-ray-token"
    assert notebook["spec"]["shareProcessNamespace"] is True
    node = next(c for c in notebook["spec"]["initContainers"] if c["name"] == "ray-node")
    assert node["restartPolicy"] == "Always" and node["image"] == notebook["spec"]["containers"][0]["image"]
    assert "--num-cpus=0" in node["command"][2] and "--num-gpus=0" in node["command"][2]
    node_env = {e["name"]: e for e in node["env"]}
    assert node_env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "ray-alice-ray-token"


def test_render_plain_profile_has_no_ray_objects(config):
    out = render(config, "--user", "bob")
    assert out.returncode == 0, out.stderr
    assert [d["kind"] for d in yaml.safe_load_all(out.stdout)] == ["Pod"]


@pytest.mark.parametrize("case,user_options,fragment", RENDERABLE, ids=[b[0] for b in RENDERABLE])
def test_render_refuses_bad_options_like_a_spawn(config, case, user_options, fragment):
    args = ["--user", "alice", "--profile", user_options["profile"]]
    for k, v in user_options.items():
        if k != "profile":
            args += ["--option", f"{k}={v}"]
    out = render(config, *args)
    assert out.returncode == 2
    assert fragment in out.stderr
    assert out.stdout == ""


def test_render_missing_config_is_a_clear_error(tmp_path):
    out = render(tmp_path / "nope.py", "--user", "alice")
    assert out.returncode != 0 and "not found" in out.stderr
