"""The operator's only door to the Kubernetes API (besides Kopf's own watches)."""

from .client import FIELD_MANAGER, Kube

__all__ = ["FIELD_MANAGER", "Kube"]
