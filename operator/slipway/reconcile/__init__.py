"""Pure reconcile logic: (spec, observed state, now) -> desired children and next status. No I/O."""
