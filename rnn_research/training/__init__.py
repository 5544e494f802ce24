"""Layer 3: the train loop and what it writes: checkpoints, metrics, status, run directory."""
