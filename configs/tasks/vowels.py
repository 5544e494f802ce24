"""JapaneseVowels: real variable-length classification read at each sequence's last step.

Masks flow through the model; eval/chance_accuracy is the majority class.

  python -m rnn_research.main --config=configs/tasks/vowels.py --workdir=runs/vowels
"""
import ml_collections

from configs import default


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  del arg
  return default.for_task("vowels", cell="gru", hidden_size=32, steps=1000, batch_size=32)
