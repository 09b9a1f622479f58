"""A real JupyterHub process with RaySpawner against the real test cluster (the hub's own account):
options sent through the REST API are validated before anything is created."""

from __future__ import annotations

import pytest

from .bad_inputs import BAD_INPUTS, LIMITS, PROFILES
from .hubproc import HubProcess
from .spawner_fixtures import ray_objects

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def hub(kube_module):
    config = f"""
c.JupyterHub.spawner_class = "ray"
c.KubeSpawner.namespace = "{kube_module.ns}"
c.KubeSpawner.k8s_api_host = "{kube_module.url}"
c.KubeSpawner.image = "quay.io/rayspawner/notebook:2.60.0"
c.KubeSpawner.profile_list = {PROFILES!r}
c.KubeSpawner.start_timeout = 20
c.KubeSpawner.http_timeout = 5
c.RaySpawner.ray_orphan_sweep_interval = 0
""" + "\n".join(f"c.RaySpawner.{k} = {v!r}" for k, v in LIMITS.items())
    h = HubProcess(config, env={"KUBECONFIG": str(kube_module.kubeconfig_path)}).start()
    h.api("POST", "/users/alice")
    yield h
    h.stop()


@pytest.mark.parametrize("case,user_options,fragment", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_rest_api_refuses_bad_options_with_400(hub, kube_module, case, user_options, fragment):
    emu = kube_module
    emu.reset_request_log()
    status, body = hub.api("POST", "/users/alice/server", user_options)
    assert status == 400, (status, body)
    assert fragment in body["message"], body
    writes = [r for r in emu.request_log if r[0] in ("create", "patch", "update", "delete")]
    assert writes == [], writes
    assert emu.list_objects("pods", emu.ns) == [] and ray_objects(emu) == []
    # the server is not left pending or running
    status, user = hub.api("GET", "/users/alice")
    assert user["servers"] == {} and not user.get("pending"), user
    assert fragment in hub.log()  # and it is logged for the admin
