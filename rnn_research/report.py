"""`python -m rnn_research.report`: run the report's sweeps and render docs/REPORT.md (rnn_research/experiments/report.py)."""
from absl import app

from rnn_research.cli import parse_flags
from rnn_research.experiments.report import main

if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
