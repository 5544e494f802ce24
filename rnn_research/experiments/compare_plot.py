"""The figures of `compare`: each group's curves of one metric over the training steps
(`plot`), and each group's final values (`plot_final`).

Per group, the mean curve over its runs that did not stop early, shaded with the 95%
confidence band of that mean (Student t over the group's runs at each step; none for one
run); a diverged or failed run is drawn thin, with an 'x' at its last finite point. The
y range comes from the runs that neither stopped nor went far beyond the others, so one
exploded member neither squashes the others nor makes the axis logarithmic; what lies beyond
the range is drawn at its edge and marked with the run's name and value.
matplotlib is imported when a figure is drawn, never by `compare` itself.
"""
from __future__ import annotations

import io
import os
from typing import Any

import numpy as np

from rnn_research.experiments.compare import STOPPED, Run, Series, finite_series
from rnn_research.experiments.stats import mean_ci
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


def _curve(run: Run, metric: str) -> np.ndarray:
  """The finite values `run` logged for `metric`."""
  return np.array([v for _, v in finite_series(run, metric)])


def outliers(runs: list[Run], metric: str, mode: str) -> set[str]:
  """Names of runs that did not stop but went far beyond the others on the bad side (above for
  "min", below for "max"): their extreme lies beyond the others' median extreme by more than
  the others' median band (median min..median max), and at least a decade on a log scale."""
  curves = {r.name: _curve(r, metric) for r in runs if r.state not in STOPPED}
  curves = {k: v for k, v in curves.items() if v.size}
  log = bool(curves) and all(v.min() > 0 for v in curves.values())
  t = {k: np.log10(v) if log else v for k, v in curves.items()}
  sign = 1.0 if mode == "min" else -1.0
  out = set()
  for name, values in t.items():
    others = [v for k, v in t.items() if k != name]
    if not others:
      continue
    lo, hi = np.median([v.min() for v in others]), np.median([v.max() for v in others])
    reach = max(hi - lo, 1.0 if log else 1e-12 + 0.1 * max(abs(lo), abs(hi)))
    edge = hi if sign > 0 else lo
    if sign * ((values.max() if sign > 0 else values.min()) - edge) > reach:
      out.add(name)
  return out


def axis_range(groups: dict[str, list[Run]], metric: str, mode: str,
               ylim: tuple[float, float] | None) -> tuple[tuple[float, float], bool, set[str]]:
  """((lo, hi), log scale?, names of the runs kept out of the range): the range spans the
  runs that neither stopped (diverged, failed) nor went far beyond the others (`outliers`),
  or `ylim`; log where those values are positive and span over a decade."""
  runs = [r for members in groups.values() for r in members]
  off = {r.name for r in runs if r.state in STOPPED} | outliers(runs, metric, mode)
  kept = [_curve(r, metric) for r in runs if r.name not in off]
  values = np.concatenate([v for v in kept if v.size] or [_curve(r, metric) for r in runs]
                          or [np.zeros(0)])
  if ylim is not None:
    values = values[(values >= ylim[0]) & (values <= ylim[1])]
  log = bool(values.size) and values.min() > 0 and values.max() / values.min() > 10
  if ylim is not None or not values.size:
    return ylim or (0.0, 1.0), log, off
  lo, hi = float(values.min()), float(values.max())
  if log:
    pad = (hi / lo) ** 0.05
    return (lo / pad, hi * pad), log, off
  pad = 0.05 * (hi - lo) or 0.05 * abs(hi) or 0.05
  return (lo - pad, hi + pad), log, off


def _mark_off(ax: Any, run: Run, metric: str, color: Any, lim: tuple[float, float]) -> None:
  """Marks where `run` leaves the axis range: at the edge, its most extreme point, labelled."""
  series = finite_series(run, metric)
  beyond = [(s, v) for s, v in series if not lim[0] <= v <= lim[1]]
  if beyond:
    step, value = max(beyond, key=lambda p: abs(p[1] - np.clip(p[1], *lim)))
    top = value > lim[1]
    ax.plot(step, lim[1] if top else lim[0], "^" if top else "v", color=color, ms=9,
            clip_on=False)
    ax.annotate(f"{run.name}: {value:.3g}", (step, lim[1] if top else lim[0]),
                xytext=(4, -12 if top else 4), textcoords="offset points", fontsize="x-small",
                color=color, annotation_clip=False)


def _draw_group(ax: Any, runs: list[Run], metric: str, color: Any, label: str,
                lim: tuple[float, float], off: set[str]) -> None:
  """Draws one group (the legend names its first line): the mean of its runs in the range,
  shaded with its 95% confidence band (`mean_ci`, clipped to the range; none for one run);
  each run out of it (stopped, or far beyond) thin, clipped to the range and marked at its
  edge; a stopped run's last point as an 'x'."""
  label_once: str | None = label
  inside = [s for s in (finite_series(r, metric) for r in runs if r.name not in off) if s]
  if inside:
    steps, matrix = _align(inside)
    mean, half = mean_ci(matrix)
    ax.plot(steps, mean, color=color, lw=2, label=label_once)
    if len(inside) > 1:
      ax.fill_between(steps, np.clip(mean - half, *lim), np.clip(mean + half, *lim),
                      color=color, alpha=0.2, lw=0)
    label_once = None
  for run in runs:
    series = finite_series(run, metric)
    if run.name in off and series:
      x, y = zip(*series)
      y = np.clip(y, *lim)
      ax.plot(x, y, color=color, lw=0.8, alpha=0.8, label=label_once)
      if run.state in STOPPED:
        ax.plot(x[-1], y[-1], "x", color=color, ms=9, mew=2, clip_on=False)
      _mark_off(ax, run, metric, color, lim)
      label_once = None


def plot(groups: dict[str, list[Run]], metric: str, mode: str, path: str,
         ylim: tuple[float, float] | None = None) -> Any:
  """Per group: mean curve over its runs in range, shaded with its 95% confidence band (none
  for a group of one run); the others thin.

  The y range (`axis_range`, or `ylim`) leaves out diverged runs and runs far beyond the
  others; what lies beyond it is drawn at its edge, and each such run is marked there with
  its name and extreme value. Saves the figure to `path` (atomically; its format from the
  extension) and returns it (a Figure).
  """
  import matplotlib  # deferred: only the plot needs it
  matplotlib.use("Agg")
  from matplotlib.figure import Figure

  fig = Figure(figsize=(11, 5.5), layout="constrained")
  ax = fig.subplots()
  lim, log, off = axis_range(groups, metric, mode, ylim)
  palette = matplotlib.colormaps["tab10" if len(groups) <= 10 else "tab20"]
  for i, (name, runs) in enumerate(groups.items()):
    _draw_group(ax, runs, metric, palette(i % palette.N), name, lim, off)
  if any(r.state in STOPPED for runs in groups.values() for r in runs):
    ax.plot([], [], "x", color="gray", label="diverged/failed (last point)")
  if any(r.name in off for runs in groups.values() for r in runs):
    ax.plot([], [], "^", color="gray", label="off the axis (name: extreme value)")
  ax.set_yscale("log" if log else "linear")
  ax.set_ylim(*lim)
  better = "lower" if mode == "min" else "higher"
  ax.set(xlabel="step", ylabel=metric,
         title=f"{metric}: mean over runs, shaded 95% CI of the mean ({better} is better)")
  ax.grid(alpha=0.3)
  ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1))
  _save(fig, path)
  return fig


def _save(fig: Any, path: str) -> None:
  """Writes `fig` to `path` atomically, in the format its extension names (png without one)."""
  image = io.BytesIO()
  fig.savefig(image, dpi=100, format=os.path.splitext(path)[1][1:] or "png")
  atomic.write_bytes(path, image.getvalue())


def final_values(runs: list[Run], metric: str) -> list[float]:
  """The final value (last finite one logged) of each run that did not stop early (as the
  table's `final`)."""
  series = [finite_series(r, metric) for r in runs if r.state not in STOPPED]
  return [s[-1][1] for s in series if s]


def _final_label(name: str, runs: list[Run]) -> str:
  """`name`, with how many of its runs stopped early, e.g. "norm=none (1 diverged)"."""
  stopped = [f"{n} {state}" for state in STOPPED
             if (n := sum(r.state == state for r in runs))]
  return f"{name} ({', '.join(stopped)})" if stopped else name


def final_ci(finals: list[float], log: bool = False) -> tuple[float, float, float]:
  """(mean, lo, hi): the mean of `finals` and its 95% t interval (NaNs for n < 2); under `log`
  the geometric mean and exp of the interval of mean log x (all finals must be > 0)."""
  values = np.log(finals) if log else np.asarray(finals, dtype=float)
  mean, half = (float(v) for v in mean_ci(values))
  back = np.exp if log else float
  return float(back(mean)), float(back(mean - half)), float(back(mean + half))


def _draw_finals(ax: Any, x: int, finals: list[float], color: Any, log: bool) -> None:
  """One group's column: its runs' finals as dots spread left of `x`, their mean with its
  95% CI (`final_ci`) as an error bar right of it (a bare mean for one run)."""
  if not finals:
    return
  spread = np.linspace(-0.25, -0.05, len(finals)) if len(finals) > 1 else np.array([-0.15])
  ax.scatter(x + spread, finals, color=color, alpha=0.7, s=28, zorder=3)
  mean, lo, hi = final_ci(finals, log)
  ax.errorbar([x + 0.15], [mean], yerr=None if np.isnan(lo) else [[mean - lo], [hi - mean]],
              fmt="D", color=color, mec="black", capsize=6, ms=7, lw=2, zorder=4)


def plot_final(groups: dict[str, list[Run]], metric: str, mode: str, path: str,
               baseline: str | None = None, log: bool = False) -> Any:
  """The final value of `metric` per group, in `groups`' order (the table's): one dot per run
  that did not stop early, the mean with its 95% confidence interval (Student t) as an error
  bar, and `baseline`'s mean (a group name) as a dashed line; under `log` geometric means on a
  log axis. Runs that stopped early give no dot; the group's label counts them. Saves the
  figure to `path` (as `plot`) and returns it."""
  import matplotlib  # deferred: only the plot needs it
  matplotlib.use("Agg")
  from matplotlib.figure import Figure

  if baseline is not None and baseline not in groups:
    raise ValueError(f"baseline {baseline!r} is no group; groups: {', '.join(groups)}")
  fig = Figure(figsize=(max(6.0, 1.2 * len(groups) + 3), 5), layout="constrained")
  ax = fig.subplots()
  palette = matplotlib.colormaps["tab10" if len(groups) <= 10 else "tab20"]
  finals = {name: final_values(runs, metric) for name, runs in groups.items()}
  every = [v for values in finals.values() for v in values]
  if log and every and min(every) <= 0:
    raise ValueError(f"log needs positive values, got {min(every):g}")
  for i, values in enumerate(finals.values()):
    _draw_finals(ax, i, values, palette(i % palette.N), log)
  if any(finals.values()):  # the legend's entries, in gray
    ax.plot([], [], "o", color="gray", alpha=0.7, label="one run's final value")
    ax.errorbar([], [], yerr=[], fmt="D", color="gray", mec="black", capsize=6,
                label=f"{'geo. mean' if log else 'mean'}, 95% CI")
  if baseline is not None and finals[baseline]:
    level = final_ci(finals[baseline], log)[0]
    ax.axhline(level, color="gray", ls="--", lw=1.2, zorder=1,
               label=f"baseline {baseline}: {level:.4g}")
  if log or every and min(every) > 0 and max(every) / min(every) > 10:
    ax.set_yscale("log")
  ax.set_xticks(range(len(groups)), [_final_label(n, r) for n, r in groups.items()],
                rotation=20 if len(groups) > 3 else 0, ha="right" if len(groups) > 3 else "center")
  ax.set_xlim(-0.6, len(groups) - 0.4)
  better = "lower" if mode == "min" else "higher"
  ax.set(ylabel=f"final {metric}",
         title=f"final {metric}: runs and {'geometric ' if log else ''}mean, 95% CI "
         f"({better} is better)")
  ax.grid(alpha=0.3, axis="y")
  if ax.get_legend_handles_labels()[0]:
    ax.legend(fontsize="small", loc="best")
  _save(fig, path)
  return fig
