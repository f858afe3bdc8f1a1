"""The churn example: Feast features -> validation -> Ray Train TorchTrainer -> TorchScript + manifest.

Modules: `validation` (schema, missing values, drift; pure), `metrics` (auc, accuracy, log loss),
`model` (the MLP and its TorchScript export), `dataset` (ordering and the held-out split; pure),
`config` (the run's configuration from the environment and `--hp` arguments), `sources` (Feast
and the entity dataset), `storage` (artifacts through fsspec), `trainer` (the Ray Train loop) and
`train` (the entrypoint, `python -m pipelines.churn.train`).
"""
