"""Kopf handlers: thin glue between watch events and the pure reconcile functions.

Importing this package registers every handler with Kopf.
"""

from . import batchprediction, modeldeployment, modelversion, persistence, settings, trainingrun, trainingschedule

__all__ = [
    "batchprediction",
    "modeldeployment",
    "modelversion",
    "persistence",
    "settings",
    "trainingrun",
    "trainingschedule",
]
