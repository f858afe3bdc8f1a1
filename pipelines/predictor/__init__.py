"""The predictor: a KServe model server for a training run's TorchScript, with Feast online features.

Run: ``python -m pipelines.predictor --model_name=<model> --http_port=<port>``. Every KServe
ModelServer argument is accepted (``kserve.model_server.parser``); Slipway changes two defaults:
``--enable_grpc`` is false (a second port nobody reads; it would collide between the dev stack's
servers) and ``--enable_latency_logging`` is false. ``--workers`` must be 1 (scale with replicas:
pods, or the ray-serve engine's).
``--direct=false`` sends every request through KServe's own routes (see ``http``).

Environment
-----------
- ``STORAGE_URI``: the run directory (``file://``, a plain path, ``s3://``/``gs://`` through
  fsspec, ``pvc://`` as the mount). If ``/mnt/models`` exists (KServe's storage initializer
  downloaded the artifact there) it is read instead; ``SLIPWAY_MODEL_DIR`` overrides both.
- ``SLIPWAY_MODEL`` (default: ``--model_name``), ``SLIPWAY_MODEL_VERSION``: the ``model`` and
  ``revision`` labels of every metric.
- ``SLIPWAY_FEATURE_SERVICE`` + ``SLIPWAY_ENTITY_KEY``: enrich instances with online features;
  the Feast repository is ``SLIPWAY_FEATURE_REPO`` (default: this checkout's ``feature_repo/``),
  its data ``SLIPWAY_FEAST_DATA`` and configuration ``SLIPWAY_FEAST_CONFIG`` (``local``,
  ``cluster`` or a yaml path), as ``feature_repo/store.py`` reads them.
- ``SLIPWAY_MAX_BATCH_SIZE`` (64 rows), ``SLIPWAY_MAX_BATCH_WAIT_MS`` (2): dynamic batching.
- ``SLIPWAY_MAX_ROWS`` (10000), ``SLIPWAY_MAX_BODY_BYTES`` (8 MiB): the most one predict/infer
  request may hold (more: 413); ``SLIPWAY_BODY_TIMEOUT_S`` (10): the longest wait for the next
  part of a request body (then 408).
- ``SLIPWAY_TORCH_THREADS`` (1: measured fastest for these batch sizes on 2 cores; each ray-serve
  replica uses it too), ``SLIPWAY_ACCESS_LOG`` (``1``: keep uvicorn's and KServe's per-request
  log lines, and Serve's replica access log).
- ``SLIPWAY_INPUT_MONITOR`` (on; ``0``/``false``/``no``/``off`` turns it off),
  ``SLIPWAY_INPUT_WINDOW_S`` (300), ``SLIPWAY_INPUT_MIN_ROWS`` (200): the input monitor (see Metrics).
- ``SLIPWAY_ENGINE``: ``kserve`` (default) or ``ray-serve`` (see Engines), and for ``ray-serve``:
  ``SLIPWAY_RAY_REPLICAS`` (1), or autoscaling between ``SLIPWAY_RAY_MIN_REPLICAS`` (1) and
  ``SLIPWAY_RAY_MAX_REPLICAS`` (both win over ``SLIPWAY_RAY_REPLICAS``; MIN alone is an error),
  ``SLIPWAY_RAY_CPUS_PER_REPLICA`` (1; > 0), ``SLIPWAY_RAY_GPUS_PER_REPLICA`` (0; > 0 runs the
  forward pass on CUDA). Amounts above 1 must be whole numbers (Ray's rule).

A bad value of any of these variables stops the server at start (exit 2) with a message naming it.

Engines
-------
``kserve``: one process; the model runs in the server's event loop (see Batching).

``ray-serve``: the same front (KServe's model server with every endpoint, status code, error
message and metric above, recorded in the front process) hands batches to Ray Serve replicas, so a
pod can use more than one core for the model. The process starts a Ray instance of its own
(``ray.init(address="local")``, whatever ``RAY_ADDRESS`` says): no dashboard, Serve's HTTP and gRPC
proxies off, an 80 MiB object store, a fresh temporary directory, ports chosen by the OS, its
processes in process groups of their own; replicas score with ``@serve.batch``
(``SLIPWAY_MAX_BATCH_SIZE`` rows, waiting up to ``SLIPWAY_MAX_BATCH_WAIT_MS``), each with its own
model (and online store). Readiness comes once every replica runs (10-20 s after start on 2
cores). SIGTERM or SIGINT, to the process or to its process group, stops the HTTP server, then
Serve, then Ray: no Ray process and no temporary directory is left (a few seconds). Should Ray's
gcs_server or raylet exit under it, the predictor stops the rest and exits with status 1. It pays for
models whose forward pass costs more than the request handling around it (about 0.1 ms a request
here); for a small model it is slower than ``kserve`` (bench/README.md, "Engines"). See
``rayserve``.

Requests
--------
v1 ``POST /v1/models/<model>:predict`` with ``{"instances": [...]}`` answers
``{"predictions": [p, ...]}`` (churn probabilities, one per instance). An instance is

- an object of feature name -> number or null (names left out, and null, are missing: imputed by
  the model, or filled from the online store when enrichment is on);
- a list of numbers (or null) in the manifest's feature order, of exactly that length;
- with enrichment: an object holding the entity key (``{"customer_id": 42}``), whose features
  come from the online store; feature values given next to the key override the store's. With
  enrichment on, every object instance must hold the key (a list needs none).

v2 ``POST /v2/models/<model>[/versions/<revision>]/infer`` (open inference protocol, JSON or the
binary tensor extension: ``Inference-Header-Content-Length``) takes exactly one input:

- numeric (``FP32``, ``FP64``, integer types) of shape ``[N, n_features]``, rows in the
  manifest's feature order (null = missing); integer types take whole numbers in their range,
  and every value must fit in float32;
- with enrichment, an input named like the entity key (e.g. ``customer_id``), ``INT64`` (or
  ``BYTES``) of shape ``[N]`` or ``[N, 1]``: the rows' features come from the online store;
- ``BYTES`` of shape ``[N]`` whose elements are v1 instances as JSON text (objects with
  entity keys and overrides, or lists).

Datatypes are the protocol's, upper case (``fp32`` is a 400). It answers one output
``predictions``, ``FP32``, shape ``[N]`` (as binary data when the request asks for it), with
``model_version`` = the revision (left out, never null, when there is none; so is every other
optional field). ``GET /v2/models/<model>[/versions/<revision>]`` (metadata) declares the
tensors: ``features`` FP32 ``[-1, n_features]``, with enrichment the entity key (``INT64`` or
``BYTES``) ``[-1]``, and ``predictions`` FP32 ``[-1]``, and ``versions`` = ``[revision]``.
Versioned routes serve the server's revision in both modes; any other version is a 404. Health:
``GET /v2/health/ready``, ``GET /v2/models/<model>[/versions/<revision>]/ready``, ``GET
/v1/models/<model>`` (ready once the model is loaded: loading happens before the port opens).
Metrics: ``GET /metrics``.

Errors: a bad request is a 400 ``{"error": "..."}`` naming the instance and feature, the input,
or the header (wrong length, a value that is not a number or does not fit its type, an unknown
feature, a missing entity key, an entity key beyond int64, empty instances, bad JSON, a bad
``Inference-Header-Content-Length``, binary data that does not fill its shape), in both modes
(``--direct=false`` too: the middleware checks the body before KServe reads it, and FastAPI's
422s are 400s); a request too large is a 413, a body that stops coming a 408, an unknown model
or version a 404; each is logged in one line, and the connection stays open. A model that
raises or returns a non-finite probability is a 500 whose body gives the model's own message
(the last line of a TorchScript error), never a traceback. An entity the store does not know is not an error: its
features are missing (imputed) and counted in ``slipway_features_missing_total``.

Metrics (default registry; labels ``model``, ``revision``): ``slipway_requests_total{outcome}``
(``success``, ``client_error``, ``server_error``; one per predict/infer HTTP request for the served
model, by status; requests for other models are not counted),
``slipway_request_duration_seconds`` (histogram, 0.5 ms .. 10 s), ``slipway_predictions_total``,
``slipway_prediction_value`` (histogram, buckets 0.05 .. 1.0), ``slipway_features_requested_total``
and ``slipway_features_missing_total`` (feature values given to the model / still missing after
enrichment). The input monitor compares the rows the model is given (after enrichment) with the
training data's profile in the manifest, per feature (label ``feature``), over the last
``SLIPWAY_INPUT_WINDOW_S`` seconds: ``slipway_input_psi`` (population stability index on the
profile's bins; once the window holds ``SLIPWAY_INPUT_MIN_ROWS`` values of the feature),
``slipway_input_missing_fraction``, ``slipway_input_out_of_range_fraction`` (outside the training
min/max, when the profile records them) and ``slipway_input_window_rows``. A manifest without a
profile is served without them. See ``monitor``.

Batching: requests that arrive together share one forward pass (and one online-store lookup) of
at most ``SLIPWAY_MAX_BATCH_SIZE`` rows; a batch waits up to ``SLIPWAY_MAX_BATCH_WAIT_MS`` only
for requests already being received, so a lone request never waits. If a batch fails, each of
its requests is run again alone. See ``batcher``.

Faulty versions for rollback tests: ``python -m pipelines.predictor.faults`` (see ``faults``).
"""
