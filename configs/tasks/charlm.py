"""Character-level Shakespeare language model (generation, lecture 5.2).

eval/bpc is bits per character on held-out plays; sample with rnn_research.sample.

  python -m rnn_research.main --config=configs/tasks/charlm.py --workdir=runs/charlm
"""
import ml_collections

from configs import default


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  del arg
  return default.for_task("charlm", cell="lstm", hidden_size=128, steps=3000, batch_size=32)
