"""Pure functions from a RayClusterSpec to Kubernetes manifests (plain dicts)."""
