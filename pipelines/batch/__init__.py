"""Batch (offline) prediction: a BatchPrediction's RayJob runs `python -m pipelines.batch`.

The contract is `slipway.api.batchprediction`: `$SLIPWAY_BATCH_PREDICTION` holds the
`BatchJobConfig` (the BatchPrediction's name, namespace, attempt and spec, and the ModelVersion the
operator resolved). The job

1. checks that `spec.output.uri` can be written and removes what an earlier attempt left there
   (its parquet files, manifest.json and failure.json);
2. reads the entity parquet file `spec.input.uri` through fsspec (keys and `spec.input.timestampColumn`),
   and joins the version's feature service point in time with Feast's `get_historical_features`:
   the same functions as training (`pipelines.churn.sources`), so every row is scored on the
   features it would have been trained on at that time (`join`);
3. scores with Ray Data: `map_batches` over `spec.scaling.workers` actors, `batchSize` rows a batch,
   each actor holding the version's TorchScript (on CUDA when `gpusPerWorker` > 0) and scoring
   exactly as the online predictor does (`pipelines.predictor`: the artifact's manifest and model,
   raw values in the manifest's feature order, NaN imputed by the model; `score`);
4. writes the input's columns plus `prediction`, `model_version` and `batch_prediction` as parquet
   files in `spec.output.uri`, then manifest.json (`BatchManifest`) last (`output`).

Exit codes are training's (`slipway.api.artifacts`, `pipelines.churn.failures`): 0 done; 1 anything
unforeseen (retried by the operator); 2 no or a bad `$SLIPWAY_BATCH_PREDICTION`; 4 the feature
service is not in the registry (`spec.featureService`); 5 the input is missing or not parquet
(`spec.input.uri`); 6 the timestamp column (`spec.input.timestampColumn`) or an entity key
(`spec.input.uri`) is not a column of it, or the timestamp column holds no times; 8 the output
cannot be written (`spec.output.uri`). For 4 to 6, failure.json (`RunFailure`, with the attempt)
is written into `spec.output.uri`. (No code 3: the operator fails a prediction at once only on
the codes `slipway.api.batchprediction.BATCH_FAILURE_REASONS` names.)
"""
