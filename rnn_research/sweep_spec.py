"""The helpers a sweep file imports (`from rnn_research.sweep_spec import product, seeds, sweep`).

They live in `rnn_research/experiments/sweep_spec.py`; this path is the one sweep files name.
"""
from rnn_research.experiments.sweep_spec import Sweep, SweepError, product, seeds, sweep, zipit

__all__ = ["Sweep", "SweepError", "product", "seeds", "sweep", "zipit"]
