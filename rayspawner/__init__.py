"""rayspawner: a JupyterHub spawner that gives every notebook server its own Ray cluster.

``c.JupyterHub.spawner_class = "ray"`` (Kubernetes, KubeSpawner subclass) or
``"ray-local"`` (local processes, no Kubernetes).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["RaySpawner", "LocalRaySpawner", "templates_path", "__version__"]


def templates_path() -> str:
    """The directory of rayspawner's hub page templates (the home page with each server's
    Ray cluster): ``c.JupyterHub.template_paths = [rayspawner.templates_path()]``."""
    from pathlib import Path

    return str(Path(__file__).resolve().parent / "templates")


def __getattr__(name: str) -> Any:
    # Lazy: importing the Kubernetes spawner is not needed for local mode, and vice versa.
    if name == "RaySpawner":
        from .spawner import RaySpawner

        return RaySpawner
    if name == "LocalRaySpawner":
        from .local_spawner import LocalRaySpawner

        return LocalRaySpawner
    raise AttributeError(name)
