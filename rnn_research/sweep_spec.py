"""The helpers a sweep file imports (`from rnn_research.sweep_spec import product, seeds, sweep`).

They live in `rnn_research/experiments/sweep_spec.py` (grids) and
`rnn_research/experiments/random_search.py` (`random_search` and its distributions `choice`,
`uniform`, `log_uniform`, `integer`); this path is the one sweep files name.
"""
from rnn_research.experiments.random_search import (choice, integer, log_uniform, random_search,
                                                    uniform)
from rnn_research.experiments.sweep_spec import Sweep, SweepError, product, seeds, sweep, zipit

__all__ = ["Sweep", "SweepError", "choice", "integer", "log_uniform", "product", "random_search",
           "seeds", "sweep", "uniform", "zipit"]
