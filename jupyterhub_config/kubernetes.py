"""JupyterHub config for Kubernetes: KubeSpawner + a per-server Ray cluster (RaySpawner).

    jupyterhub -f jupyterhub_config/kubernetes.py     # the hub runs in (or can reach) the cluster

Same profiles (``plain``, ``ray``, ``ray-large``, ``ray-gpu``) and limits as
local mode (see profiles.py). Notebook and Ray pods go to the namespace
``jhub`` (``RAYSPAWNER_NAMESPACE`` overrides). With Zero-to-JupyterHub use
z2jh/values.yaml instead; the hub's extra RBAC is in rbac/.
"""

import importlib.util
import os
from pathlib import Path

import rayspawner

c = get_config()  # noqa: F821 - provided by JupyterHub

_here = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("rayspawner_example_profiles", _here / "profiles.py")
profiles = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(profiles)

c.JupyterHub.spawner_class = "rayspawner.RaySpawner"
c.RaySpawner.namespace = os.environ.get("RAYSPAWNER_NAMESPACE", "jhub")
# the notebook image carries Ray (images/notebook); the Ray cluster runs on it too (ray_image empty)
c.RaySpawner.image = os.environ.get(
    "RAYSPAWNER_NOTEBOOK_IMAGE", "registry.example.com/rayspawner/rayspawner-notebook:2.60.0-py311"
)
c.RaySpawner.start_timeout = 600  # image pulls
# the notebook pod meets the "restricted" Pod Security Standard (and OpenShift's restricted SCC,
# which picks the UID: set c.RaySpawner.uid = None there); the Ray pods and the notebook's Ray
# node sidecar carry the same settings on their own
c.RaySpawner.pod_security_context = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
c.RaySpawner.container_security_context = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}
c.RaySpawner.ray_backend = "auto"  # KubeRay when installed, else plain pods
c.RaySpawner.profile_list = profiles.visible_profiles()
# the hub's home page shows each server's Ray cluster (size, dashboard link); Stop asks first
c.JupyterHub.template_paths = [rayspawner.templates_path()]
for name, value in profiles.LIMITS.items():
    setattr(c.RaySpawner, name, value)
