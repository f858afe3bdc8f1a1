"""The typed API (TrainingRun, ModelVersion, ModelDeployment): the one source of the CRDs."""
