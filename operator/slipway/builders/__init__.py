"""Pure functions from API types to the child objects the operator owns. No I/O."""
