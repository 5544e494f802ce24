"""`python -m rnn_research.sweep`: run every member of a sweep file, resumably (rnn_research/experiments/sweep_runner.py)."""
from absl import app

from rnn_research.cli import parse_flags
from rnn_research.experiments.sweep_runner import main

if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
