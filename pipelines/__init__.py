"""Code that runs in the cluster's pods: training pipelines (and the predictor)."""
