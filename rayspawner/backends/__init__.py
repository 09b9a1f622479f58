"""Cluster backends: one small async interface, three implementations."""

from .base import ClusterBackend, ClusterStatus

__all__ = ["ClusterBackend", "ClusterStatus"]
