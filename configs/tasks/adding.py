"""The adding problem (Hochreiter & Schmidhuber 1997): sum two marked values (2.2.3).

eval/mse_over_chance below 1 beats predicting 1 (chance mse 1/6).

  python -m rnn_research.main --config=configs/tasks/adding.py --workdir=runs/adding
"""
import ml_collections

from configs import default


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  del arg
  return default.for_task("adding", cell="gru", hidden_size=32, steps=3000, batch_size=64)
