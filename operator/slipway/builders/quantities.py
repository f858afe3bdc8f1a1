"""Kubernetes quantity formatting for values the API takes as numbers."""

from __future__ import annotations


def cpu_quantity(cpus: float) -> str:
    """4 -> "4", 0.5 -> "500m": the canonical form the apiserver would store."""
    if float(cpus).is_integer():
        return str(int(cpus))
    return f"{round(cpus * 1000)}m"
