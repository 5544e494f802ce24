"""Layer 1: the recurrent core: typed model spec, registries, cells, norms, step, engine, model."""
