"""Regime switching: context that is long-lived and shifts suddenly (lecture section 3).

eval/oracle_accuracy is the exact HMM filter's accuracy, the ceiling.

  python -m rnn_research.main --config=configs/tasks/multiscale.py --workdir=runs/multiscale
"""
import ml_collections

from configs import default


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  del arg
  return default.for_task("multiscale", cell="gru", hidden_size=32, steps=3000, batch_size=64)
