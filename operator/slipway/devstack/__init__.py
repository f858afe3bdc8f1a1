"""The one-machine dev stack: a real control plane, our CRDs and the operator, no Docker."""
