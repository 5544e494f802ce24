"""`compare`'s figures: the curves' 95% confidence band and the final values per group.

The sweeps are synthesized as in test_compare.py (its `make_run`, `config` and `SWEEP`); the
expected intervals are computed here by hand from the fixture's values (event files hold
float32, hence rel=1e-6).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from matplotlib.collections import PathCollection
from matplotlib.colors import to_rgb
from scipy import stats

from rnn_research.experiments import compare, compare_plot, stats as compare_stats
from tests.test_compare import config, make_run, sweep_dir  # noqa: F401 (a fixture)


def t_interval(values: list[float]) -> tuple[float, float]:
  """The 95% Student t interval of the mean of `values`, by hand."""
  n = len(values)
  mean = sum(values) / n
  std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
  half = stats.t.ppf(0.975, n - 1) * std / math.sqrt(n)
  return mean - half, mean + half


def band_of(ax, label: str):
  """The fill_between band drawn in the colour of the mean curve labelled `label`."""
  line = next(line for line in ax.get_lines() if line.get_label() == label)
  color = to_rgb(line.get_color())
  bands = [c for c in ax.collections if to_rgb(c.get_facecolor()[0][:3]) == color]
  return bands


def band_at(band, step: float) -> tuple[float, float]:
  """(lower, upper) of a fill_between band at `step`, read from its polygon's vertices."""
  ys = [y for path in band.get_paths() for x, y in path.vertices if x == step]
  return min(ys), max(ys)


def test_curve_band_is_the_t_interval(sweep_dir, tmp_path):  # noqa: F811
  groups = compare.group_runs(compare.load_runs(str(sweep_dir)), None, None)
  path = tmp_path / "compare.png"
  ax = compare_plot.plot(groups, "eval/loss", "min", str(path)).axes[0]
  assert path.exists() and path.stat().st_size > 0
  assert "95% CI" in ax.get_title()
  (band,) = band_of(ax, "norm=none")
  # none's seeds at step 300: 0.5, 0.7, 0.6 -> 0.6 ± t(0.975, 2) * 0.1 / sqrt(3).
  assert band_at(band, 300) == pytest.approx(t_interval([0.5, 0.7, 0.6]), rel=1e-6)
  assert band_at(band, 300) == pytest.approx((0.6 - 0.24841, 0.6 + 0.24841), abs=1e-4)
  assert band_at(band, 0) == pytest.approx((2.0, 2.0))  # all seeds equal: no width
  # At step 100 (0.4, 1.0, 0.9) the lower end lies below the axis: clipped to its edge.
  lo, hi = ax.get_ylim()
  assert t_interval([0.4, 1.0, 0.9])[0] < lo
  assert band_at(band, 100) == pytest.approx((lo, t_interval([0.4, 1.0, 0.9])[1]))
  # layer: the diverged seed is left out, the band is over the other two (t with 1 dof).
  (layer,) = band_of(ax, "norm=layer")
  assert band_at(layer, 200) == pytest.approx(
      np.clip(t_interval([0.3, 0.4]), lo, hi), rel=1e-6)


def test_mean_ci_matches_scipy():
  values = np.array([[1.0, 2.0], [2.0, np.nan], [4.0, np.nan]])
  mean, half = compare_stats.mean_ci(values)
  assert mean == pytest.approx([7 / 3, 2.0])
  assert half[0] == pytest.approx(t_interval([1.0, 2.0, 4.0])[1] - 7 / 3)
  assert np.isnan(half[1])  # one value: no interval
  low, high = stats.t.interval(0.95, 2, loc=7 / 3, scale=stats.sem([1.0, 2.0, 4.0]))
  assert (mean[0] - half[0], mean[0] + half[0]) == pytest.approx((low, high))


def test_one_run_group_has_no_band(tmp_path):
  make_run(tmp_path, "solo", config("none", 0), [2.0, 1.0, 0.5], "completed")
  make_run(tmp_path, "a", config("layer", 0), [2.0, 0.8, 0.4], "completed")
  make_run(tmp_path, "b", config("layer", 1), [2.0, 0.9, 0.3], "completed")
  make_run(tmp_path, "c", config("layer", 2), [2.0, 3.0], "diverged")
  groups = compare.group_runs(compare.load_runs(str(tmp_path)), ["model.norm"], None)
  ax = compare_plot.plot(groups, "eval/loss", "min", str(tmp_path / "c.png")).axes[0]
  assert band_of(ax, "norm=none") == []
  assert len(band_of(ax, "norm=layer")) == 1  # two runs besides the diverged one
  # A group of two runs of which one diverged is a group of one: no band either.
  ax = compare_plot.plot({"g": groups["norm=none"] + [groups["norm=layer"][2]]}, "eval/loss",
                         "min", str(tmp_path / "d.png")).axes[0]
  assert band_of(ax, "g") == []


def error_bars(ax) -> list:
  """The error bars drawn with data (not the legend's empty stand-in)."""
  return [c for c in ax.containers if len(c.lines[0].get_xdata())]


def finals_figure(sweep_dir: Path, tmp_path: Path, baseline: str | None = None):
  groups = compare.group_runs(compare.load_runs(str(sweep_dir)), None, None)
  rows = compare.summarize(groups, "eval/loss", "min")
  ordered = {r.group: groups[r.group] for r in rows}  # as report passes them: the table's order
  path = tmp_path / "compare_final.png"
  ax = compare_plot.plot_final(ordered, "eval/loss", "min", str(path), baseline).axes[0]
  return ax, path


def test_final_figure_dots_and_error_bars(sweep_dir, tmp_path):  # noqa: F811
  ax, path = finals_figure(sweep_dir, tmp_path)
  assert path.read_bytes().startswith(b"\x89PNG") and path.stat().st_size > 1000
  labels = [t.get_text() for t in ax.get_xticklabels()]
  assert labels == ["norm=layer (1 diverged)", "norm=none", "norm=batch"]
  # One dot per run that gave a final value: layer 2 (not the diverged), none 3, batch 2.
  dots = [c for c in ax.collections if isinstance(c, PathCollection)]
  finals = [sorted(float(y) for _, y in d.get_offsets()) for d in dots]
  expected = [[0.25, 0.35], [0.5, 0.6, 0.7], [0.9, 1.5]]
  assert [len(f) for f in finals] == [len(e) for e in expected]
  assert sum(finals, []) == pytest.approx(sum(expected, []), rel=1e-6)
  xs = [[float(x) for x, _ in d.get_offsets()] for d in dots]
  assert all(i - 0.5 < x < i + 0.5 for i, column in enumerate(xs) for x in column)
  assert all(len(set(column)) == len(column) for column in xs)  # jittered apart
  # Each error bar spans the t interval of the group's finals, centred on their mean.
  bars = error_bars(ax)
  assert len(bars) == 3
  for bar, values in zip(bars, expected):
    data, _, (segments,) = bar.lines
    assert data.get_ydata()[0] == pytest.approx(np.mean(values))
    (segment,) = segments.get_segments()
    assert sorted(segment[:, 1]) == pytest.approx(t_interval(values), rel=1e-6)
  assert not [line for line in ax.get_lines() if line.get_label().startswith("baseline")]
  assert [t.get_text() for t in ax.get_legend().get_texts()] == [
      "one run's final value", "mean, 95% CI"]


def test_final_figure_baseline_line(sweep_dir, tmp_path):  # noqa: F811
  ax, _ = finals_figure(sweep_dir, tmp_path, baseline="norm=none")
  (line,) = [line for line in ax.get_lines() if line.get_label().startswith("baseline")]
  assert list(line.get_ydata()) == pytest.approx([0.6, 0.6])  # none's finals 0.5, 0.7, 0.6
  assert line.get_label() == "baseline norm=none: 0.6"
  assert "baseline norm=none: 0.6" in [t.get_text() for t in ax.get_legend().get_texts()]
  with pytest.raises(ValueError, match="baseline 'norm=nope' is no group"):
    finals_figure(sweep_dir, tmp_path, baseline="norm=nope")


def test_final_figure_one_run_and_all_diverged(tmp_path):
  make_run(tmp_path, "solo", config("none", 0), [2.0, 1.0, 0.5], "completed")
  make_run(tmp_path, "x", config("layer", 0), [2.0, 5.0], "diverged")
  make_run(tmp_path, "y", config("layer", 1), [2.0, 9.0], "failed")
  groups = compare.group_runs(compare.load_runs(str(tmp_path)), ["model.norm"], None)
  path = tmp_path / "f.png"
  ax = compare_plot.plot_final(groups, "eval/loss", "min", str(path), "norm=layer").axes[0]
  assert path.stat().st_size > 0
  assert [t.get_text() for t in ax.get_xticklabels()] == [
      "norm=none", "norm=layer (1 diverged, 1 failed)"]
  (bar,) = error_bars(ax)  # only none has a value: a bare mean, no interval for one run
  assert bar.lines[0].get_ydata()[0] == pytest.approx(0.5) and not bar.lines[2]
  assert not [line for line in ax.get_lines() if line.get_label().startswith("baseline")]


def test_final_figure_log_uses_geometric_means(sweep_dir, tmp_path):  # noqa: F811
  groups = compare.group_runs(compare.load_runs(str(sweep_dir)), None, None)
  ax = compare_plot.plot_final(groups, "eval/loss", "min", str(tmp_path / "g.png"),
                               "norm=none", log=True).axes[0]
  assert ax.get_yscale() == "log" and "geometric mean" in ax.get_title()
  logs = np.log([0.5, 0.7, 0.6])  # none's finals: exp of the t interval of their logs
  lo, hi = np.exp(t_interval(list(logs)))
  bar = error_bars(ax)[[t.get_text() for t in ax.get_xticklabels()].index("norm=none")]
  assert bar.lines[0].get_ydata()[0] == pytest.approx(np.exp(logs.mean()), rel=1e-6)
  assert sorted(bar.lines[2][0].get_segments()[0][:, 1]) == pytest.approx([lo, hi], rel=1e-6)
  (line,) = [line for line in ax.get_lines() if line.get_label().startswith("baseline")]
  assert line.get_ydata()[0] == pytest.approx(np.exp(logs.mean()), rel=1e-6)
  accuracy = {"all": [r for runs in groups.values() for r in runs]}  # 1 - 1.5 < 0
  with pytest.raises(ValueError, match="log needs positive values"):
    compare_plot.plot_final(accuracy, "eval/accuracy", "max", str(tmp_path / "h.png"), log=True)
