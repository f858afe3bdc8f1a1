"""Kopf handlers: thin glue between watch events and the pure reconcile functions.

Importing this package registers every handler with Kopf.

Index functions are `async def`: they are pure and quick, and Kopf runs a sync function in its
handler threads, where each child event's indexing would queue behind handlers blocked on API calls.
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
