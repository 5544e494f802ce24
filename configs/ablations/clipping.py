"""Ablation: gradient clipping on a ReLU RNN whose gradients explode (lecture 2.1.2).

Claim tested (2.1.2): clipping the gradient stops it from exploding, but it "distorts the
shape" on which gradient descent moves, so it is a last resort. Clipping by the global norm
(g <- g min(1, c / ||g||), Pascanu et al. 2013) keeps the direction of a step and only shortens
it; clipping each value (g <- clip(g, -c, c)) also turns the direction.

Setup: a one-layer ReLU RNN (32 units, orthogonal W_h at gain 1.0, adam, cosine decay) on the
`adding` problem (T = 150, loss at the last step): without clipping its gradient norm spikes to
1e3-1e10 (measured when this file was written). Members: `train.clip` none, global_norm with
`clip_value` in {0.1, 1, 10}, value with `clip_value` in {0.01, 0.1, 1} × peak learning rate
{1e-3, 1e-2} × 3 seeds with adam (42 runs), and the same clips with SGD (momentum 0.9, peak
learning rate 1e-2) × 3 seeds (21 runs). `grad/global_norm` is logged before clipping, so its
spikes show in every member; what clipping changes is what the optimizer does with them.

Supports the claim: unclipped members diverge or end near chance (`eval/mse_over_chance` ≈ 1)
while clipped ones learn (well below 1); and the tightest thresholds (global_norm 0.1, value
0.01) learn more slowly or end worse than moderate ones (the distortion), more so for `value`
than for `global_norm`.
Contradicts it: clipping makes no difference to whether the ReLU RNN learns, or the tightest
thresholds are as good as any (no sign of distortion).

  python -m rnn_research.sweep --config=configs/ablations/clipping.py --workdir=runs/clipping \
      --parallel=2
  python -m rnn_research.compare runs/clipping --metric=eval/mse_over_chance

Size: 4000 steps, about 5 minutes on 2 CPU cores with 2 members in parallel;
`clipping.py:full` trains 4x longer with 128 units (for a GPU).
"""
import ml_collections

from configs import default
from rnn_research.sweep_spec import product, seeds, sweep


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """`arg`: None or "small" (the ~10-minute size) or "full"."""
  config = default.ablation_base("clipping.py", arg, "adding", "rnn", 4000)
  # A non-saturating σ: the RNN whose gradients explode (lecture 2.1.1).
  config.model.activation = "relu"
  return config


def get_sweep() -> list[dict]:
  clips = (sweep("train.clip", ["none"])
           + product(sweep("train.clip", ["global_norm"]),
                     sweep("train.clip_value", [0.1, 1.0, 10.0]))
           + product(sweep("train.clip", ["value"]),
                     sweep("train.clip_value", [0.01, 0.1, 1.0])))
  adam = product(clips, sweep("train.learning_rate", [1e-3, 1e-2]), seeds(3))
  # Adam divides each coordinate by its own running gradient scale, so clipping mostly changes
  # its moment estimates, not the step length; plain SGD (with momentum 0.9) takes the clipped
  # gradient as the step, the setting of the lecture and of Pascanu et al. 2013.
  sgd = product(sweep("train.optimizer", ["sgd"]), clips, sweep("train.learning_rate", [1e-2]),
                seeds(3))
  return adam + sgd


def get_baseline() -> dict:
  """The group every other is tested against (compare): no clipping, adam at 1e-2 (members
  at another learning rate or with SGD differ from it in that too)."""
  return {"train.clip": "none", "train.learning_rate": 1e-2}


def get_metric() -> tuple[str, str]:
  return ("eval/mse_over_chance", "min")
