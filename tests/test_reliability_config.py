"""Configuration errors through a real JupyterHub: each fails the spawn with a clear
message (REST API error body and hub log) and creates nothing.

Where it fails, and why (docs/reliability.md):

- the hub itself starts: JupyterHub instantiates spawners lazily and KubeSpawner
  does not contact the API server at start-up, so these are reported at the first
  spawn (or at start-up, when a server was running: the spawner is made then);
- unknown ``ray_backend`` (any invalid trait value): HTTP 500 whose message names the
  trait and the allowed values (was "Internal Server Error" plus a traceback in the log);
- a bad quantity in config (``ray_worker_memory = "lots"``): HTTP 400 naming the setting;
- ``ray_backend = "kuberay"`` without the CRD (the test cluster's fault proxy hides ``ray.io`` as an
  API server without KubeRay answers): the message says KubeRay is missing and how to fix it;
- an unreachable API server: the message says the Kubernetes API kept failing, after
  ``k8s_api_request_retry_timeout`` seconds.
"""

from __future__ import annotations

import pytest
import yaml

from .hubproc import HubProcess, free_port
from .spawner_fixtures import NOTEBOOK_IMAGE, PROFILES

pytestmark = pytest.mark.slow

RAY = {"profile": "ray", "workers": "1"}
CASES = {
    "unknown-backend": (
        'c.RaySpawner.ray_backend = "bogus"',
        500,
        ["ray_backend", "'auto', 'pods', 'kuberay'", "bogus", "jupyterhub_config.py"],
    ),
    "bad-quantity": ('c.RaySpawner.ray_worker_memory = "lots"', 400, ["worker memory", "lots", "2Gi"]),
    "kuberay-forced-without-crd": (
        'c.RaySpawner.ray_backend = "kuberay"',
        500,
        ["KubeRay is not installed", "ray_backend", "helm install"],
    ),
    "unreachable-api": ('c.RaySpawner.ray_backend = "pods"', 500, ["Kubernetes API kept failing", "gave up after 3 s"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_config_error_fails_spawn_clearly(kube, tmp_path, case):
    line, status, fragments = CASES[case]
    host, kubeconfig = kube.url, kube.kubeconfig_path
    if case == "kuberay-forced-without-crd":
        kube.proxy.hidden_groups.add("ray.io")
    if case == "unreachable-api":
        host = f"http://127.0.0.1:{free_port()}"  # nothing listens there
        doc = yaml.safe_load(kubeconfig.read_text())
        doc["clusters"][0]["cluster"]["server"] = host
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump(doc))
    config = f"""
c.JupyterHub.spawner_class = "ray"
c.KubeSpawner.namespace = "{kube.ns}"
c.KubeSpawner.k8s_api_host = "{host}"
c.KubeSpawner.image = "{NOTEBOOK_IMAGE}"
c.KubeSpawner.profile_list = {PROFILES!r}
c.KubeSpawner.start_timeout = 30
c.KubeSpawner.k8s_api_request_timeout = 1
c.KubeSpawner.k8s_api_request_retry_timeout = 3
c.RaySpawner.ray_orphan_sweep_interval = 0
{line}
"""
    hub = HubProcess(config, env={"KUBECONFIG": str(kubeconfig)}).start()  # the hub starts: see module docstring
    try:
        hub.api("POST", "/users/alice")
        kube.reset_request_log()
        code, body = hub.api("POST", "/users/alice/server", RAY)
        assert code == status, (code, body)
        message = body["message"]
        for fragment in fragments:
            assert fragment in message, (fragment, message)
        assert "Traceback" not in message and "Internal Server Error" not in message
        writes = [r for r in kube.request_log if r[0] in ("create", "patch", "update", "delete")]
        assert writes == [] and kube.list_objects("pods", kube.ns) == [] and kube.list_objects("secrets", kube.ns) == []
        code, user = hub.api("GET", "/users/alice")
        assert user["servers"] == {} and not user.get("pending"), user  # nothing pending or running
        assert fragments[0] in hub.log()  # and the admin sees it in the log
    finally:
        hub.stop()
