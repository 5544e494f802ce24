"""Which sweep axes matter: functional ANOVA (Hutter et al. 2014, as in Greff et al. 2017).

The metric is a function f(x) of the axes x = (x_1, ..., x_k) under a product measure (each axis
uniform over its levels). Its decomposition into orthogonal parts,

  f_0 = E f,   f_i(x_i) = E[f | x_i] - f_0,   f_ij(x_i, x_j) = E[f | x_i, x_j] - f_i - f_j - f_0,

gives Var f = sum_i Var f_i + sum_{i<j} Var f_ij + (interactions of three or more axes), and each
axis' (pair's) importance is its share Var f_u / Var f. Shares and the residual sum to 1.

* Full grid (every combination of the axes' values present): exact. Repeats of a point (its
  seeds, the seed key left out of `points`) are averaged first; f is then that grid of means.
* Otherwise (random search, a grid with holes): a surrogate is fitted and decomposed exactly.
  With no scikit-learn (no random forest), it is ridge regression on one-hot levels of the
  categorical axes and [z, z^2] of the numeric ones (z standardised; log10 first for a positive
  axis spanning >= 10x that looks log-uniform: its values split more evenly at the geometric
  than at the arithmetic midpoint), plus every product of two axes' features. The ridge λ minimises the
  leave-one-out error; R^2 in sample and leave-one-out are reported. Its measure: a categorical
  axis uniform over its observed levels, a numeric one over 16 quantiles of its observed values
  (what the search sampled). The surrogate has no terms of three axes: its residual is 0, and
  what it misses is 1 - R^2.

No jax. `from_runs` gives the markdown for compare's runs; `importance` and `markdown` are the
parts.
"""
from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from rnn_research.training.workdir import flat

SEED_KEY = "train.seed"
STOPPED = ("diverged", "failed")
QUANTILES = 16
LAMBDAS = 10.0 ** np.arange(-6, 4)
Share = tuple[tuple[str, ...], float]


@dataclass
class Importance:
  """Shares of Var f, largest first; the residual is the share of 3+-axis interactions."""
  shares: list[Share]
  residual: float
  method: str  # "grid" (exact) or "surrogate"
  points: int  # distinct points, repeats averaged
  values: int  # values given
  r2: float | None = None  # the surrogate's, in sample
  r2_loo: float | None = None  # the surrogate's, leave-one-out


def _key(value: Any) -> tuple[str, str]:
  """A hashable, sortable stand-in for a config value (True and 1 stay apart)."""
  return type(value).__name__, json.dumps(value, sort_keys=True, default=str)


def _is_number(value: Any) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def _shares(axes: list[str], mains: list[np.ndarray], pairs: dict[tuple[int, int], np.ndarray],
            total: float) -> list[Share]:
  out = [((axes[i],), float(np.mean(m ** 2)) / total) for i, m in enumerate(mains)]
  out += [((axes[i], axes[j]), float(np.mean(p ** 2)) / total) for (i, j), p in pairs.items()]
  return sorted(out, key=lambda s: -s[1])


def _grid(cells: dict[tuple, float], levels: list[list[tuple]]) -> tuple[list, dict, float]:
  """Exact components of the grid of cell means: (f_i per axis, f_ij per pair, Var f)."""
  f = np.empty([len(l) for l in levels])
  index = [{level: n for n, level in enumerate(l)} for l in levels]
  for cell, value in cells.items():
    f[tuple(index[a][level] for a, level in enumerate(cell))] = value
  k, f0 = f.ndim, float(f.mean())
  mean_over = lambda keep: f.mean(axis=tuple(a for a in range(k) if a not in keep))
  mains = [mean_over((i,)) - f0 for i in range(k)]
  pairs = {(i, j): mean_over((i, j)) - mains[i][:, None] - mains[j][None, :] - f0
           for i, j in itertools.combinations(range(k), 2)}
  return mains, pairs, float(np.mean((f - f0) ** 2))


class _Features:
  """Per-axis features: one-hot levels, or [z, z^2] of a (log10-)standardised number."""

  def __init__(self, column: list[Any]):
    distinct = sorted({_key(v) for v in column})
    self.numeric = len(distinct) > 2 and all(_is_number(v) for v in column)
    if not self.numeric:
      self.levels = distinct
      self.grid = [json.loads(text) for _, text in distinct]
      return
    x = np.asarray(column, dtype=float)
    self.log = bool(x.min() > 0 and x.max() >= 10 * x.min() and  # log-uniform-looking
                    abs(np.mean(x < math.sqrt(x.min() * x.max())) - 0.5)
                    < abs(np.mean(x < (x.min() + x.max()) / 2) - 0.5))
    t = np.log10(x) if self.log else x
    self.mean, self.std = float(t.mean()), float(t.std())
    self.grid = list(np.quantile(x, (np.arange(QUANTILES) + 0.5) / QUANTILES))

  def __call__(self, column: Sequence[Any]) -> np.ndarray:
    """[n, d] features of n values."""
    if not self.numeric:
      keys = [_key(v) for v in column]
      return np.array([[float(k == level) for level in self.levels] for k in keys])
    t = np.asarray(column, dtype=float)
    z = ((np.log10(t) if self.log else t) - self.mean) / self.std
    return np.stack([z, z ** 2], axis=1)


def _design(phis: list[np.ndarray]) -> np.ndarray:
  """Columns: each axis' features, then the products of every two axes' features."""
  blocks = list(phis) + [(phis[a][:, :, None] * phis[b][:, None, :]).reshape(len(phis[a]), -1)
                         for a, b in itertools.combinations(range(len(phis)), 2)]
  return np.concatenate(blocks, axis=1)


def _ridge(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float, float, float]:
  """(coefficients, intercept, R^2, leave-one-out R^2) at the λ of least leave-one-out error."""
  xm, ym = x.mean(axis=0), y.mean()
  xc, yc = x - xm, y - ym
  sst = float(np.sum(yc ** 2))
  best = None
  for lam in LAMBDAS:
    inverse = np.linalg.pinv(xc.T @ xc + lam * np.eye(x.shape[1]))
    w = inverse @ xc.T @ yc
    hat = np.einsum("nd,de,ne->n", xc, inverse, xc) + 1.0 / len(y)
    residual = yc - xc @ w
    press = float(np.sum((residual / np.maximum(1.0 - hat, 1e-9)) ** 2))
    if best is None or press < best[0]:
      best = (press, w, float(np.sum(residual ** 2)))
  press, w, sse = best
  return w, float(ym - xm @ w), 1.0 - sse / sst, 1.0 - press / sst


def _surrogate(points: list[tuple], y: np.ndarray) -> tuple[list, dict, float, float, float]:
  """Components of the fitted surrogate on its measure: (f_i, f_ij, Var f, R^2, LOO R^2)."""
  k = len(points[0])
  features = [_Features([p[a] for p in points]) for a in range(k)]
  w, b0, r2, r2_loo = _ridge(_design([features[a]([p[a] for p in points]) for a in range(k)]), y)
  grids = [f(f.grid) for f in features]  # [m_a, d_a]
  means = [g.mean(axis=0, keepdims=True) for g in grids]

  def conditional(keep: tuple[int, ...]) -> np.ndarray:
    """E[f | x_keep] on the grids of `keep`: the other axes' features replaced by their means
    (exact, as no term multiplies two features of one axis)."""
    phis = [grids[a] if a in keep else means[a] for a in range(k)]
    mesh = np.meshgrid(*[np.arange(len(phi)) for phi in phis], indexing="ij")
    x = _design([phis[a][mesh[a].reshape(-1)] for a in range(k)])
    return (x @ w + b0).reshape([len(phi) for phi in phis]).squeeze(
        axis=tuple(a for a in range(k) if a not in keep))

  f0 = float(conditional(()))
  mains = [conditional((i,)) - f0 for i in range(k)]
  pairs = {(i, j): conditional((i, j)) - mains[i][:, None] - mains[j][None, :] - f0
           for i, j in itertools.combinations(range(k), 2)}
  total = sum(float(np.mean(m ** 2)) for m in mains) + sum(
      float(np.mean(p ** 2)) for p in pairs.values())
  return mains, pairs, total, r2, r2_loo


def importance(points: list[dict[str, Any]], values: list[float]) -> Importance:
  """The fANOVA shares of the axes (keys of `points` that take two or more values) and of
  their pairs in the variance of `values`: exact on a full grid, else from a surrogate."""
  if len(points) != len(values) or not points:
    raise ValueError(f"importance needs one value per point, got {len(points)} points and "
                     f"{len(values)} values")
  if not all(math.isfinite(v) for v in values):
    raise ValueError("importance needs finite values")
  keys = list(dict.fromkeys(k for p in points for k in p))
  axes = [k for k in keys if len({_key(p.get(k)) for p in points}) > 1]
  if not axes:
    raise ValueError("no axis takes two values")
  cells: dict[tuple, list[float]] = {}
  for p, v in zip(points, values):
    cells.setdefault(tuple(_key(p.get(k)) for k in axes), []).append(float(v))
  means = {cell: float(np.mean(vs)) for cell, vs in cells.items()}
  if float(np.var(list(means.values()))) <= 1e-12 * max(1.0, max(map(abs, means.values()))) ** 2:
    raise ValueError("the metric does not vary over the points")
  levels = [sorted({cell[a] for cell in means}) for a in range(len(axes))]
  if len(means) == math.prod(len(l) for l in levels):
    mains, pairs, total = _grid(means, levels)
    shares = _shares(axes, mains, pairs, total)
    return Importance(shares, max(0.0, 1.0 - sum(s for _, s in shares)), "grid", len(means),
                      len(values))
  if len(means) < 3:
    raise ValueError(f"{len(means)} distinct points are too few for a surrogate")
  decoded = [tuple(json.loads(text) for _, text in cell) for cell in means]
  mains, pairs, total, r2, r2_loo = _surrogate(decoded, np.array(list(means.values())))
  return Importance(_shares(axes, mains, pairs, total), 0.0, "surrogate", len(means),
                    len(values), r2, r2_loo)


def markdown(result: Importance, metric: str = "the metric") -> str:
  """The shares as a markdown table (largest first), with how they were computed."""
  lines = ["| axes | share of variance |", "|---|---|"]
  lines += [f"| {' × '.join(axes)} | {share:.1%} |" for axes, share in result.shares]
  if result.method == "grid":
    lines.append(f"| interactions of 3+ axes | {result.residual:.1%} |")
    how = (f"exact on the full grid of {result.points} points ({result.values} runs, repeats "
           "averaged)")
  else:
    how = (f"from a surrogate (ridge on one-hot levels, [z, z²] of numbers and their pairwise "
           f"products) fitted to {result.points} points ({result.values} runs, repeats averaged): "
           f"R² {result.r2:.2f} in sample, {result.r2_loo:.2f} leave-one-out")
    if result.r2_loo < 0.5:
      how += "; the surrogate explains little of the metric, so these shares are unreliable"
  return "\n".join(lines) + f"\n\nVariance of {metric} explained by each axis (functional " \
      f"ANOVA), {how}.\n"


def _hashable(value: Any) -> Any:
  return json.dumps(value, sort_keys=True) if isinstance(value, (list, dict)) else value


def _axes(runs: Sequence[Any], configs: list[dict[str, Any]],
          sweep: dict[str, Any] | None) -> list[str]:
  """The keys the sweep's members override, else the config keys that differ; no seed."""
  members = {m.get("name"): m.get("overrides", {}) for m in (sweep or {}).get("members", [])}
  if members and all(run.name in members for run in runs):
    keys = list(dict.fromkeys(k for run in runs for k in members[run.name]))
  else:
    keys = sorted({k for c in configs for k in c if len(
        {json.dumps(d.get(k), sort_keys=True) for d in configs}) > 1})
  return [k for k in keys if k != SEED_KEY]


def from_runs(runs: Sequence[Any], metric: str, mode: str = "min",
              sweep: dict[str, Any] | None = None, axes: Sequence[str] | None = None,
              log: bool = False) -> str:
  """The markdown importance table of compare's `Run`s (name, config, status, scalars).

  A run's value is the last finite value of `metric` (its log with `log`); diverged and failed
  runs, and with `log` non-positive values, are left out (and counted). The axes are `axes`
  (e.g. compare's --group_by), else the keys the members of `sweep` (sweep.json) override, else
  the config keys that differ; never `train.seed` (seeds are averaged). `mode` is only shown."""
  finals, configs = [], []
  for run in runs:
    series = [v for _, v in run.scalars.get(metric, []) if math.isfinite(v)]
    if series and run.status.get("state") not in STOPPED and (series[-1] > 0 or not log):
      finals.append(math.log(series[-1]) if log else series[-1])
      configs.append(flat(run.config))
  keys = [k for k in axes if k != SEED_KEY] if axes else _axes(runs, configs, sweep)
  points = [{k: _hashable(c.get(k)) for k in keys} for c in configs]
  left = len(runs) - len(finals)
  why = "diverged, failed, not started or not positive" if log else \
      "diverged, failed or not started"
  note = f" {left} run(s) without a final value ({why}) left out." if left else ""
  name = f"log {metric}" if log else metric
  try:
    if not finals:
      raise ValueError(f"no run has a final value of {metric}")
    text = markdown(importance(points, finals), f"{name} ({mode} is best)")
  except ValueError as err:
    return f"Axis importance of {name}: not computed ({err}).{note}\n"
  return text.rstrip("\n") + note + "\n"
