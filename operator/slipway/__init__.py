"""Slipway: a Kubernetes-native ML platform (TrainingRun -> ModelVersion -> ModelDeployment)."""

GROUP = "slipway.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
