"""Cluster backends: one small async interface, three implementations."""

from ..secretlog import install_secret_log_redaction
from .base import ClusterBackend, ClusterStatus

install_secret_log_redaction()  # before any Kubernetes call: no Secret values in DEBUG logs

__all__ = ["ClusterBackend", "ClusterStatus"]
