"""Ablation: what researchers ask of every RNN library, each against the plain LSTM it modifies,
on Kalman filtering (lecture section 5.1), so that each feature's price (steps/s) and effect
(`eval/mse_over_kalman`, 1.0 = the exact Kalman filter) can be read side by side.

Members (× 2 seeds, 30 runs), all `lstm`, 32 units unless said:
  baseline; `num_layers=2` and `num_layers=2, dropout=0.25` (dropout acts between layers);
  `recurrent_dropout=0.25`, and with `recurrent_dropout_inputs` (Gal & Ghahramani 2016);
  `learned_initial_state`; `task.pack=4` (4 episodes per training row with `resets`) and the
  same with `model.resets=False` (the carry runs across episode boundaries);
  `bidirectional` concat and sum; `norm=batch_per_step` (Cooijmans et al. 2016);
  `cell` gru, min_gru and min_lstm (Feng et al. 2024, parallel scan), and lru (Orvieto et
  al. 2023: a complex diagonal linear recurrence on the same scan).

What to expect, and what would contradict it:
- The task is causal filtering with unlimited fresh data, so dropout can only cost accuracy
  here (no overfitting to prevent); a dropout member beating its baseline would be a surprise.
- A bidirectional model sees the future observations: it is a smoother, and should go *below*
  1.0 (better than the best causal filter). Staying at or above 1.0 would mean the backward
  stack is not being used.
- Packed rows without resets carry state from one episode into the next while evaluation starts
  every episode from h_0: `resets=False` should evaluate worse than `resets=True`.
- A learned h_0 can encode the prior of the state (the filter's x_0): a small gain at most.
- min_gru / min_lstm have gates of x_t only and an elementwise (diagonal) recurrence
  h_t = a_t ⊙ h_{t-1} + b_t. The steady-state Kalman filter is a linear recurrence too, but
  with a full matrix (A - K C A), which mixes the state's dimensions (a rotation, for complex
  eigenvalues) that no diagonal recurrence of one layer can: expect a gap above 1.0 that the
  gated cells with W_h do not have. (The measured gap: docs/axes.md.)
- lru's recurrence is diagonal too, but over complex modes: a diagonalisable linear filter such
  as (A - K C A), rotations included, is one complex λ per eigenvalue, so the LRU can represent
  the Kalman filter's recurrence that min_gru cannot. Expect it to close most of the min cells'
  gap; a gap as large as theirs would mean its complex modes are not being used.

  python -m rnn_research.sweep --config=configs/ablations/extensions.py \
      --workdir=runs/extensions --parallel=2
  python -m rnn_research.compare runs/extensions --metric=eval/mse_over_kalman

Size: about 10 minutes on 2 CPU cores with 2 members in parallel; `extensions.py:full` trains
4x longer with 128 units (for a GPU).
"""
import ml_collections

from configs import default
from rnn_research.sweep_spec import product, seeds, sweep


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """`arg`: None or "small" (the ~10-minute size) or "full"."""
  return default.ablation_base("extensions.py", arg, "kalman", "lstm", 2000)


def get_sweep() -> list[dict]:
  models = ([{}, {"model.num_layers": 2}, {"model.num_layers": 2, "model.dropout": 0.25},
             {"model.recurrent_dropout": 0.25},
             {"model.recurrent_dropout": 0.25, "model.recurrent_dropout_inputs": True},
             {"model.learned_initial_state": True},
             {"task.pack": 4}, {"task.pack": 4, "model.resets": False}]
            + sweep("model.bidirectional", ["concat", "sum"])
            + [{"model.norm": "batch_per_step"}]
            + sweep("model.cell", ["gru", "min_gru", "min_lstm", "lru"]))
  return product(models, seeds(2))


def get_baseline() -> dict:
  """The group every other is tested against (compare): the plain LSTM (no overrides)."""
  return {}


def get_metric() -> tuple[str, str]:
  return ("eval/mse_over_kalman", "min")
