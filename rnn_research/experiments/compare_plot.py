"""The figure of `compare`: each group's curves of one metric over the training steps.

Per group, the mean curve over its runs that did not stop early, shaded from their min to
their max; a diverged or failed run is drawn thin, with an 'x' at its last finite point.
matplotlib is imported when a figure is drawn, never by `compare` itself.
"""
from __future__ import annotations

import io
import os
from typing import Any

import numpy as np

from rnn_research.experiments.compare import STOPPED, Run, Series, finite_series
from rnn_research.training import atomic


def _align(series: list[Series]) -> tuple[np.ndarray, np.ndarray]:
  """Steps and a [runs, steps] matrix on the steps all runs logged (any, if none are common)."""
  steps = sorted(set().union(*({s for s, _ in ser} for ser in series)))
  index = {s: j for j, s in enumerate(steps)}
  matrix = np.full((len(series), len(steps)), np.nan)
  for i, ser in enumerate(series):
    for s, v in ser:
      matrix[i, index[s]] = v
  keep = ~np.isnan(matrix).any(0)
  if not keep.any():
    keep = ~np.isnan(matrix).all(0)
  return np.array(steps)[keep], matrix[:, keep]


def _draw_group(ax: Any, runs: list[Run], metric: str, color: Any, label: str) -> list[float]:
  """Draws one group (the legend names its first line); returns the values drawn."""
  shown: list[float] = []
  label_once: str | None = label
  alive = [s for s in (finite_series(r, metric) for r in runs if r.state not in STOPPED) if s]
  if alive:
    steps, matrix = _align(alive)
    ax.plot(steps, np.nanmean(matrix, 0), color=color, lw=2, label=label_once)
    ax.fill_between(steps, np.nanmin(matrix, 0), np.nanmax(matrix, 0), color=color, alpha=0.2)
    shown += list(matrix[~np.isnan(matrix)])
    label_once = None
  for run in runs:
    series = finite_series(run, metric)
    if run.state in STOPPED and series:
      x, y = zip(*series)
      ax.plot(x, y, color=color, lw=0.8, alpha=0.8, label=label_once)
      ax.plot(x[-1], y[-1], "x", color=color, ms=9, mew=2)
      shown += y
      label_once = None
  return shown


def _set_scale(ax: Any, shown: list[float], ylim: tuple[float, float] | None) -> None:
  """Log scale where the values inside `ylim` (all, if None) span over a decade."""
  values = np.array(shown)
  if ylim is not None:
    values = values[(values >= ylim[0]) & (values <= ylim[1])]
  if values.size and values.min() > 0 and values.max() / values.min() > 10:
    ax.set_yscale("log")
  if ylim is not None:
    ax.set_ylim(*ylim)


def plot(groups: dict[str, list[Run]], metric: str, mode: str, path: str,
         ylim: tuple[float, float] | None = None) -> Any:
  """Per group: mean curve over its runs, shaded min..max; stopped runs thin with an 'x'.

  `ylim` fixes the y range (an exploded run can otherwise squash every other curve). Saves the
  figure to `path` (atomically; its format from the extension) and returns it (a Figure).
  """
  import matplotlib  # deferred: only the plot needs it
  matplotlib.use("Agg")
  from matplotlib.figure import Figure

  fig = Figure(figsize=(11, 5.5), layout="constrained")
  ax = fig.subplots()
  shown: list[float] = []
  palette = matplotlib.colormaps["tab10" if len(groups) <= 10 else "tab20"]
  for i, (name, runs) in enumerate(groups.items()):
    shown += _draw_group(ax, runs, metric, palette(i % palette.N), name)
  if any(r.state in STOPPED for runs in groups.values() for r in runs):
    ax.plot([], [], "x", color="gray", label="diverged/failed (last point)")
  _set_scale(ax, shown, ylim)
  better = "lower" if mode == "min" else "higher"
  ax.set(xlabel="step", ylabel=metric,
         title=f"{metric}: mean over runs, shaded min..max ({better} is better)")
  ax.grid(alpha=0.3)
  ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1))
  image = io.BytesIO()
  fig.savefig(image, dpi=100, format=os.path.splitext(path)[1][1:] or "png")
  atomic.write_bytes(path, image.getvalue())
  return fig
