"""`python -m pipelines.predictor --model_name=<model> --http_port=<port>`: see the package docstring."""

from .server import main

raise SystemExit(main())
