"""Layer 4: sweeps of many runs, their comparison and the report."""
