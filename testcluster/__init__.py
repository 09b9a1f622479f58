"""Test support: a real Kubernetes control plane (v1.37.2) on loopback, our node agent and
optionally the real KubeRay operator. Not shipped in the rayspawner wheel.

``python -m testcluster up --dir DIR [--kuberay] [--node process|sim]`` and
``python -m testcluster down --dir DIR``; pytest fixtures in ``testcluster.fixtures``.
"""
