"""The copy problem: recall K symbols after a delay (long-range dependence, lecture 2.2.3).

eval/chance_xent = log(num_symbols) is what a model without memory gets.

  python -m rnn_research.main --config=configs/tasks/copy.py --workdir=runs/copy
"""
import ml_collections

from configs import default


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  del arg
  return default.for_task("copy", cell="lstm", hidden_size=64, steps=4000, batch_size=64)
