"""Command-line entry points: `slipway` and the `kubectl slipway` plugin."""
