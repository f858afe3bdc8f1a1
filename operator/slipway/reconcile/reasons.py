"""Fixed reasons for conditions and events, so alerts and tests can match on them."""

# TrainingRun
RAYJOB_CREATED = "RayJobCreated"
RAYJOB_PENDING = "RayJobPending"
RAYJOB_RUNNING = "RayJobRunning"
RAYJOB_SUCCEEDED = "RayJobSucceeded"
RAYJOB_FAILED = "RayJobFailed"
RAYJOB_INVALID = "RayJobInvalid"  # KubeRay refused the RayJob (ValidationFailed): never retried
DEADLINE_EXCEEDED = "DeadlineExceeded"
INVALID_SPEC = "InvalidSpec"  # a field the operator needs is unset and has no default

# ModelDeployment
VERSION_NOT_FOUND = "ModelVersionNotFound"
NO_VERSION_PASSED_GATES = "NoVersionPassedGates"
VERSION_RESOLVED = "ModelVersionResolved"
ROLLING_OUT = "RollingOut"
ENDPOINT_READY = "EndpointReady"
ENDPOINT_NOT_READY = "EndpointNotReady"
ROLLOUT_STARTED = "RolloutStarted"
WAITING_FOR_CANDIDATE = "WaitingForCandidate"
STEP_ADVANCED = "StepAdvanced"
PROMOTED = "Promoted"
SUPERSEDED = "Superseded"
ANALYSIS_FAILED = "AnalysisFailed"
ANALYSIS_INCONCLUSIVE = "AnalysisInconclusive"
PROGRESS_DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"
ABORTED = "Aborted"
PAUSED = "Paused"
RESUMED = "Resumed"
AWAITING_PROMOTION = "AwaitingPromotion"
RETRY_REQUESTED = "RetryRequested"

# ModelVersion
REGISTERED = "Registered"

# TrainingRun, after the job
# What the user must fix, each with the entrypoint's own exit code (slipway.api.artifacts
# FAILURE_REASONS): the run fails at once, never retried.
DATA_VALIDATION_FAILED = "DataValidationFailed"
FEATURE_SERVICE_NOT_FOUND = "FeatureServiceNotFound"
DATASET_NOT_FOUND = "DatasetNotFound"
COLUMN_NOT_FOUND = "ColumnNotFound"
INVALID_HYPERPARAMETER = "InvalidHyperparameter"
ARTIFACTS_UNWRITABLE = "ArtifactsUnwritable"
ENTRYPOINT_CONFIG_INVALID = "EntrypointConfigInvalid"
GATE_FAILED = "GateFailed"
GATES_PASSED = "GatesPassed"
MANIFEST_MISSING = "ManifestMissing"
RETRYING = "Retrying"
BACKOFF_LIMIT_EXCEEDED = "BackoffLimitExceeded"
MODEL_REGISTERED = "ModelVersionRegistered"
