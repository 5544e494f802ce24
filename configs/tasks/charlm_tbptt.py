"""Character-level Shakespeare with truncated BPTT: long streams, the state carried across windows.

Each training row is a stream of 2048 consecutive characters, trained 128 steps (one window) per
optimizer step; the final state of a window starts the next one, with the gradient stopped
between them, and a fresh stream starts from h_0. eval/bpc is measured on held-out rows of 2048
characters, each run as one stream. `:off` is the baseline on the same held-out rows: crops of
128 characters, each from h_0 (charlm.py's training).

  python -m rnn_research.main --config=configs/tasks/charlm_tbptt.py --workdir=runs/charlm_tbptt
  python -m rnn_research.main --config=configs/tasks/charlm_tbptt.py:off --workdir=runs/charlm_crops
"""
import ml_collections

from configs import default


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Truncated BPTT (`arg` None) or, with `arg` "off", the same run on crops from h_0."""
  if arg not in (None, "off"):
    raise ValueError(f"configs/tasks/charlm_tbptt.py: unknown arg {arg!r}; valid: off")
  config = default.for_task("charlm", cell="lstm", hidden_size=128, steps=3000, batch_size=32)
  # Held-out rows as long as a training stream (8 x 2048 characters), the same for both forms.
  config.task.eval_windows = 8
  config.task.eval_length = 2048
  if arg is None:
    # Streams of 2048 characters in windows of 128 (16 optimizer steps per stream).
    config.task.stream_length = 2048
    config.train.tbptt_window = 128
  return config
