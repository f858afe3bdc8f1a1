"""A real Kubernetes control plane (etcd + kube-apiserver) on loopback, for tests and the dev stack."""

from .assets import Assets, find_assets
from .server import ControlPlane

__all__ = ["Assets", "ControlPlane", "find_assets"]
