"""Ablation: saturating vs non-saturating σ in a vanilla RNN (lecture 2.1.1).

Claim tested (2.1.1): saturating activations (tanh, sigmoid) "apply a brake" on the gradient,
so the hidden state and its gradient cannot explode, whereas a non-saturating σ (ReLU, or none
at all) lets them run off to infinity when the recurrent gain is above one; the price of the
brake is the dying gradient of section 2 (a saturated tanh RNN forgets what it saw long ago).

Setup: a one-layer vanilla RNN (eq. 13.1, `cell=rnn`, 32 units) on the `adding` problem
(T = 150, the loss at the last step only, so every gradient crosses the whole chain), with
gradient clipping OFF (`train.clip='none'`) so that an explosion is not hidden. Members:
σ in {tanh, sigmoid, relu, identity} × the gain of the orthogonal W_h at step 0,
`recurrent_scale` in {0.5, 1.0, 2.0} × 3 seeds (36 runs). ReLU zeroes about half the units,
so its effective gain is about scale / sqrt(2) (He et al. 2015): 2.0 is above one for every σ
(the same W_h = 2 × orthogonal as docs/grad_flow_relu_orthogonal_x2.png).

Supports the claim: relu/identity with recurrent_scale 2.0 (and possibly 1.0) diverge
(`status.json` state `diverged`, a non-finite loss or gradient) or show huge `grad/global_norm`
spikes, while tanh/sigmoid never diverge at any gain; tanh/sigmoid stay near chance
(`eval/mse_over_chance` ≈ 1) if their gradient dies over 150 steps.
Contradicts it: a saturating σ that diverges, or a relu/identity RNN at gain 2.0 that trains
stably without clipping. (What the activation costs when nothing explodes is the
final `eval/mse_over_chance` of the members that complete.)

  python -m rnn_research.sweep --config=configs/ablations/activations.py \
      --workdir=runs/activations --parallel=2
  python -m rnn_research.compare runs/activations --metric=eval/mse_over_chance

Size: 4000 steps, about 3 minutes on 2 CPU cores with 2 members in parallel (diverged runs
stop at once); `activations.py:full` trains 4x longer with 128 units (for a GPU).
"""
import ml_collections

from configs import default
from rnn_research.sweep_spec import product, seeds, sweep


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """`arg`: None or "small" (the ~10-minute size) or "full"."""
  config = default.ablation_base("activations.py", arg, "adding", "rnn", 4000)
  # Clipping off: the explosion this ablation looks for must not be clipped away.
  config.train.clip = "none"
  return config


def get_sweep() -> list[dict]:
  return product(sweep("model.activation", ["tanh", "sigmoid", "relu", "identity"]),
                 sweep("model.recurrent_scale", [0.5, 1.0, 2.0]),
                 seeds(3))


def get_baseline() -> dict:
  """The group every other is tested against (compare): tanh at gain 1.0."""
  return {"model.activation": "tanh", "model.recurrent_scale": 1.0}


def get_metric() -> tuple[str, str]:
  return ("eval/mse_over_chance", "min")
