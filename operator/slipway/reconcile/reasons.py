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
SHADOW_PASSED = "ShadowPassed"  # the shadow stage passed: user traffic may go to the candidate
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

# BatchPrediction (besides the RayJob, retry and user-error reasons above, which it shares; a
# version that does not exist or never passed its gates is ModelVersionNotFound or NoVersionPassedGates)
OUTPUT_UNWRITABLE = "OutputUnwritable"  # the job cannot write spec.output.uri (exit code 8)
PREDICTIONS_WRITTEN = "PredictionsWritten"

# TrainingSchedule
RUN_TRIGGERED = "RunTriggered"  # a trigger made a TrainingRun (the message says which, and its value)
RUN_REPLACED = "RunReplaced"  # concurrencyPolicy Replace deleted an active run for a new one
SKIPPED_COOLDOWN = "SkippedCooldown"
SKIPPED_RUN_ACTIVE = "SkippedRunActive"  # concurrencyPolicy Forbid and a run is still active
SKIPPED_SUSPENDED = "SkippedSuspended"
RUNS_PRUNED = "RunsPruned"  # finished runs beyond the history limits were deleted
SCHEDULE_ACTIVE = "ScheduleActive"
SUSPENDED = "Suspended"
INVALID_SCHEDULE = "InvalidSchedule"  # a cron expression the schema's pattern let through but cron refuses
INVALID_TIME_ZONE = "InvalidTimeZone"  # spec.timeZone has a zone name's shape but the zone database has no such zone
DRIFT_ABOVE_THRESHOLD = "DriftAboveThreshold"
DRIFT_WITHIN_THRESHOLD = "DriftWithinThreshold"
DRIFT_UNKNOWN = "DriftUnknown"  # no data, or Prometheus unreachable: never a trigger
