"""Ablation: where to normalise a stacked RNN (lecture 2.1.3, Fig 13.7-13.11), where the stack learns.

Claim tested (2.1.3): normalisation helps with exploding gradients (and somewhat with dying
ones), and its placement matters: `layer` norm between layers trains fine but at test time,
step by step, it must use statistics from training (the eval here does, `eval_norm_stats=
'running'`); `mini_layer` (per step, on the way up) and `mini_vertical` (per step, on the way to
the next step) work; `vertical` (across the layers at one step) "is not done in practice"; `batch`
is possible but not usually done. Beyond the lecture: Cooijmans et al. 2016's `batch_per_step`
and Ba et al. 2016's `layer_per_step`, which normalise x W_x and h_{t-1} W_h inside the cell.

Setup: a 3-layer ReLU RNN (32 units per layer, orthogonal W_h at gain 1.0, adam at 1e-2 with
cosine decay, 2000 steps) on the `adding` problem at T = 50, with gradient clipping OFF: the
norm, not the clip, must keep the gradient in check. At T = 50 the plain stack learns (a pilot
reached mse_over_chance 0.03 in 1500 steps), so a norm can show a cost or a gain in what is
learned, not only in how often a run diverges (the first edition used T = 150, where every
group stayed at chance). Members: `model.norm` in {none, layer, mini_layer, mini_vertical,
vertical, batch, batch_per_step, layer_per_step} × 8 seeds (64 runs).
`norm_placement.py:tanh` is the same with a tanh stack (nothing explodes: the dying-gradient
side of the claim).

Supports the claim: with a norm, fewer runs diverge (`status.json` `diverged`; Fisher's test
against `none`), more reach mse_over_chance 0.1 and sooner (`steps to 0.1`), and the final
`eval/mse_over_chance` is no worse than `none`'s (its CI of the ratio includes or lies below
1); the norms on the recurrent path (`mini_vertical`, `vertical`, `batch_per_step`,
`layer_per_step`) act on the within-layer chain that explodes, those on the way up (`layer`,
`mini_layer`, `batch`) only between layers.
Contradicts it: the normalised groups diverge as often as `none` (Fisher p > 0.05) and learn
less, or the placement makes no difference.

  python -m rnn_research.sweep --config=configs/ablations/norm_placement.py --workdir=runs/norm \
      --parallel=2
  python -m rnn_research.compare runs/norm --metric=eval/mse_over_chance --threshold=0.1

`norm_placement.py:kalman` runs the placements on the `kalman` filtering problem (tanh, clipping
on, 2000 steps (3000 before; cut to fit the report's time budget), 3 seeds), plus `layer`
evaluated with each sequence's own statistics (`eval_norm_stats='sequence'`, not streamable: the
gap to `layer` is what streaming with training statistics costs) and
`none`/`mini_layer`/`mini_vertical` at width 2 (where a per-step norm leaves only the order of
the two features), so that the cost of streaming `layer` norm and of mini norms at width 2 can
be read (`eval/mse_over_kalman`).
Size: 64 runs of about 10-20 s each on 2 CPU cores with 2 in parallel (`vertical` runs
time-major and `batch_per_step` with the plain scan, both slower); `:full` trains 4x longer with
128 units (for a GPU).
"""
import ml_collections

from configs import default
from rnn_research.sweep_spec import product, seeds, sweep

NORMS = ["none", "layer", "mini_layer", "mini_vertical", "vertical", "batch", "batch_per_step",
         "layer_per_step"]


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """`arg`: comma-separated options: small (default size) or full; tanh (σ, default relu);
  kalman (the linear-Gaussian filtering problem, tanh, clipping on: a problem the stack learns)."""
  opts = _options(arg)
  full = "full" in opts
  if "kalman" in opts:
    config = default.for_task("kalman", cell="rnn", hidden_size=128 if full else 32,
                              steps=8000 if full else 2000, batch_size=64)
    config.model.num_layers = 3
    return config
  config = default.for_task("adding", cell="rnn", hidden_size=128 if full else 32,
                            steps=8000 if full else 2000, batch_size=64)
  config.model.num_layers = 3
  # T = 50: the plain stack learns, so the norms' effect on what is learned can show.
  config.task.length = 50
  config.model.activation = "tanh" if "tanh" in opts else "relu"
  # Clipping off: the norm, not the clip, is what should keep the gradient in check.
  config.train.clip = "none"
  return config


def _options(arg: str | None) -> set[str]:
  opts = set(arg.split(",")) if arg else set()
  if opts - {"small", "full", "tanh", "kalman"}:
    raise ValueError(f"norm_placement.py: unknown arg {arg!r}; valid: small, full, tanh, kalman")
  return opts


def get_sweep(arg: str | None = None) -> list[dict]:
  """Every placement × 8 seeds; with `kalman`, 3 seeds plus the streaming and width-2 members."""
  placements = sweep("model.norm", NORMS)
  if "kalman" not in _options(arg):
    return product(placements, seeds(8))
  # `layer` evaluated with each sequence's own statistics: not streamable, the upper bound
  # that the running statistics of a streaming eval are measured against.
  whole_sequence = [{"model.norm": "layer", "model.eval_norm_stats": "sequence"}]
  # Width 2: a per-step norm over 2 features leaves only their order (each vector becomes
  # ±1 before gain and bias), where mini norms "lose meaning".
  tiny = product(sweep("model.norm", ["none", "mini_layer", "mini_vertical"]),
                 sweep("model.hidden_size", [2]))
  return product(placements + whole_sequence + tiny, seeds(3))


def get_baseline() -> dict:
  """The group every other is tested against (compare): no norm, 32 units."""
  return {"model.norm": "none"}


def get_metric(arg: str | None = None) -> tuple[str, str]:
  """The metric of the config's task (`arg` as in get_config)."""
  kalman = "kalman" in _options(arg)
  return ("eval/mse_over_kalman" if kalman else "eval/mse_over_chance", "min")
