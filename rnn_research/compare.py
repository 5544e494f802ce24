"""`python -m rnn_research.compare`: compare the runs of a sweep directory (rnn_research/experiments/compare.py)."""
from absl import app

from rnn_research.cli import parse_flags
from rnn_research.experiments.compare import main

if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
