"""Default configuration: a small LSTM, every `config.model` key at its default.

  python scripts/benchmark.py --sizes=small
"""
import ml_collections

from rnn_research.model_config import model_defaults


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The default config, locked so that a typo in an override fails loudly."""
  del arg
  config = ml_collections.ConfigDict()
  # The recurrent core; every key and its meaning: rnn_research/model_config.py.
  config.model = model_defaults()
  config.lock()
  return config
