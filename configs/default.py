"""Default: a 32-unit GRU learns to filter a linear-Gaussian system (lecture 1.1, 5.1).

  python -m rnn_research.main --config=configs/default.py --workdir=runs/default

`eval/mse_over_kalman` is the RNN filter's MSE over the exact Kalman filter's (1.0 is optimal).
Other problems: configs/tasks/<task>.py; every model key: rnn_research/core/spec.py; the
defaults of every section: rnn_research/training/config_defaults.py.
"""
import ml_collections

from rnn_research.training.config_defaults import ablation_base, base, for_task

__all__ = ["ablation_base", "base", "for_task", "get_config"]  # configs/* use all four


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The README's main job (its result and timing: docs/guide.md); it takes no `arg`."""
  if arg:  # e.g. get_config("charlm"): this file has one config, the kalman one
    raise ValueError(
        f"configs/default.py takes no arg, got {arg!r}; for a task's config use "
        f"configs/tasks/<task>.py, or default.for_task({arg!r}, cell=..., hidden_size=..., "
        f"steps=..., batch_size=...) or default.base({arg!r}) (in a file outside configs/: "
        "from rnn_research.training.config_defaults import for_task, base)")
  return for_task("kalman", cell="gru", hidden_size=32, steps=1500, batch_size=64)
