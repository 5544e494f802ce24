"""One-step-ahead forecasting of hourly Seattle temperatures (real data, lecture 5.1).

eval/mse_over_persistence below 1 beats predicting the last observation.

  python -m rnn_research.main --config=configs/tasks/temperature.py --workdir=runs/temperature
"""
import ml_collections

from configs import default


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  del arg
  return default.for_task("temperature", cell="gru", hidden_size=32, steps=3000, batch_size=64)
