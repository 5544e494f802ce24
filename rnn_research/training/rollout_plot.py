"""The figure of `rollout`: truth, the model's closed loop and the filter's, per rollout.

One column per rollout (the first MAX_PANELS), one row per plotted output (pendulum: sin theta
and omega; temperature: the standardised temperature). Each panel draws the truth, the model
and the filter over steps 0..W+N-1, with a dotted vertical line where the warm-up ends (between
steps W - 1 and W) and the rollout's horizon MSEs in its title. Drawn with matplotlib's Agg
canvas (no display), imported when the figure is drawn; written atomically.
"""
from __future__ import annotations

import io
import os

import numpy as np

from rnn_research.training import atomic
from rnn_research.training.rollout import Rollout

MAX_PANELS = 4
# task -> (output index, label) of each plotted row
CHANNELS = {"pendulum": ((0, "sin θ"), (2, "ω (rad / time unit)")),
            "temperature": ((0, "temperature (std. units)"),)}


def write_png(rollout: Rollout, path: str) -> None:
  """Draws `rollout` (its first MAX_PANELS rollouts) and writes it to `path` as a PNG."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # deferred: only the plot
  from matplotlib.figure import Figure

  channels = CHANNELS[rollout.task]
  cols = min(len(rollout.rows), MAX_PANELS)
  fig = Figure(figsize=(3.6 * cols + 0.6, 2.6 * len(channels) + 0.6), dpi=100,
               layout="constrained")
  FigureCanvasAgg(fig)
  axes = np.asarray(fig.subplots(len(channels), cols, squeeze=False, sharex=True))
  steps = np.arange(rollout.truth.shape[1])
  model_mse, filter_mse = rollout.horizon_mse(rollout.model), rollout.horizon_mse(rollout.filter)
  lines = (("truth", rollout.truth, dict(color="black", lw=1.4)),
           ("model", rollout.model, dict(color="tab:blue", lw=1.2)),
           (rollout.filter_name, rollout.filter, dict(color="tab:orange", lw=1.2, ls="--")))
  for k in range(cols):
    for row, (index, label) in enumerate(channels):
      ax = axes[row, k]
      for name, ys, style in lines:
        ax.plot(steps, ys[k, :, index], label=name, **style)
      ax.axvline(rollout.warmup - 0.5, color="grey", ls=":", lw=1.0)
      ax.set_ylabel(label if k == 0 else "")
    axes[0, k].set_title(f"sequence {rollout.rows[k]}: MSE model {model_mse[k]:.3g}, "
                         f"{rollout.filter_name} {filter_mse[k]:.3g}", fontsize="small")
    axes[-1, k].set_xlabel("step (warm-up | closed loop)")
  axes[0, 0].legend(fontsize="small", loc="best")
  fig.suptitle(f"{rollout.task}: closed-loop rollouts, warm-up {rollout.warmup} steps, "
               f"horizon {len(steps) - rollout.warmup}")
  image = io.BytesIO()
  fig.savefig(image, format="png")
  atomic.write_bytes(os.fspath(path), image.getvalue())
