"""The churn example's Feast feature repository (see README.md).

Modules: ``features`` (the Feast definitions; the only one ``feast apply`` imports),
``generate`` (the deterministic data generator; numpy and pandas only) and ``store`` (apply,
bounded materialization, historical and online retrieval). Nothing is imported here, so
``import feature_repo.generate`` does not pull in Feast.
"""
