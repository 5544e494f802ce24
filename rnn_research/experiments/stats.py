"""The statistics of `compare`: per-group intervals and tests of each group against a baseline.

numpy and scipy only (no jax). A group's sample is its runs' final values x_1..x_n (runs that
diverged or failed give none; their rate is tested separately). Every interval is 95 % and
two-sided; every test is two-sided and the family of comparisons with one baseline is
Holm-adjusted, so "better" / "worse" at alpha = 0.05 keeps the chance of any false verdict in
the table at or below 5 % (each CI alone is not adjusted). With `log`, the values are log x:
differences become ratios of geometric means, exp(mean log x_a - mean log x_b).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from scipy import stats as sps

ALPHA = 0.05
LEVEL = 0.95


@dataclass(frozen=True)
class Summary:
  """One group's n, mean, median and the 95 % t interval [lo, hi] of its mean (NaN if n < 2)."""
  n: int
  mean: float
  median: float
  lo: float
  hi: float


@dataclass(frozen=True)
class Comparison:
  """One group against the baseline. `diff` = mean - baseline mean (under log: the ratio of
  geometric means), [lo, hi] its Welch 95 % CI, `g` Hedges' g, `p` Welch's two-sided p and
  `p_holm` the Holm-adjusted one (NaN where undefined), `verdict` "better" | "worse" |
  "no evidence", `div_p`, `div_p_holm` Fisher's exact test of the divergence rates, and with a
  threshold `reached`, `base_reached` ((runs that reached it, runs) of the group and of the
  baseline; None without one) and `reach_p`, `reach_p_holm` Fisher's test of those rates."""
  group: str
  n: int
  diff: float
  lo: float
  hi: float
  g: float
  p: float
  p_holm: float
  verdict: str
  div_p: float
  div_p_holm: float
  reached: tuple[int, int] | None = None
  base_reached: tuple[int, int] | None = None
  reach_p: float = math.nan
  reach_p_holm: float = math.nan


def transform(values: Sequence[float], log: bool) -> np.ndarray:
  """The values as an array, or their natural logs (ValueError unless all > 0)."""
  x = np.asarray(values, dtype=float)
  if log:
    if np.any(x <= 0):
      raise ValueError(f"--log needs positive values of the metric, got {float(x.min()):g}")
    x = np.log(x)
  return x


def mean_ci(values: Any, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
  """The mean over axis 0 (NaNs left out: runs that stopped) and the half-width of its
  Student t interval, t_{n-1, (1+level)/2} · s / sqrt(n), s the sample standard deviation
  (ddof 1); the half-width is NaN where n < 2. values: [runs, ...] (e.g. [runs, steps])."""
  values = np.asarray(values, dtype=float)
  n = np.sum(~np.isnan(values), 0)
  mean = np.where(n > 0, np.nansum(values, 0) / np.maximum(n, 1), np.nan)
  dof = np.maximum(n - 1, 1)
  std = np.sqrt(np.nansum((values - mean) ** 2, 0) / dof)
  t = sps.t.ppf((1 + level) / 2, dof)
  return mean, np.where(n > 1, t * std / np.sqrt(np.maximum(n, 1)), np.nan)


def t_interval(values: Sequence[float], level: float = LEVEL) -> tuple[float, float]:
  """Student's t interval of the mean of `values` (mean_ci); (NaN, NaN) for n < 2."""
  if len(values) < 2:
    return math.nan, math.nan
  mean, half = (float(v) for v in mean_ci(values, level))
  return mean - half, mean + half


def describe(values: Sequence[float], log: bool = False) -> Summary:
  """n, mean, median and the t interval of the mean; under `log` the geometric mean exp(mean
  log x) and exp of the interval of mean log x. NaNs for an empty group."""
  if len(values) == 0:
    return Summary(0, math.nan, math.nan, math.nan, math.nan)
  x = transform(values, log)
  back = np.exp if log else (lambda v: v)
  lo, hi = t_interval(x)
  return Summary(len(x), float(back(x.mean())), float(np.median(values)), float(back(lo)),
                 float(back(hi)))


def welch(a: Sequence[float], b: Sequence[float],
          level: float = LEVEL) -> tuple[float, float, float, float]:
  """(d, lo, hi, p) for d = mean(a) - mean(b): Welch's interval d ± t_{ν, (1+level)/2} · SE with
  SE² = s_a²/n_a + s_b²/n_b and ν = SE⁴ / ((s_a²/n_a)²/(n_a-1) + (s_b²/n_b)²/(n_b-1))
  (Welch-Satterthwaite), and p of scipy.stats.ttest_ind(a, b, equal_var=False). NaN for the
  interval and p when a group has n < 2 or SE = 0."""
  a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
  d = float(a.mean() - b.mean()) if len(a) and len(b) else math.nan
  if len(a) < 2 or len(b) < 2:
    return d, math.nan, math.nan, math.nan
  va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
  if va + vb == 0:
    return d, math.nan, math.nan, math.nan
  nu = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
  half = float(sps.t.ppf((1 + level) / 2, nu) * math.sqrt(va + vb))
  p = float(sps.ttest_ind(a, b, equal_var=False).pvalue)
  return d, d - half, d + half, p


def hedges_g(a: Sequence[float], b: Sequence[float]) -> float:
  """Hedges' g = J · (mean(a) - mean(b)) / s_p with the pooled s_p² = ((n_a-1) s_a² +
  (n_b-1) s_b²) / (n_a + n_b - 2) and the small-sample factor J = 1 - 3 / (4 (n_a + n_b) - 9);
  NaN when n_a + n_b < 3 or s_p = 0."""
  a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
  dof = len(a) + len(b) - 2
  if len(a) == 0 or len(b) == 0 or dof < 1:
    return math.nan
  ss = (np.var(a, ddof=1) * (len(a) - 1) if len(a) > 1 else 0.0) + (
      np.var(b, ddof=1) * (len(b) - 1) if len(b) > 1 else 0.0)
  if ss == 0:
    return math.nan
  return float((1 - 3 / (4 * (len(a) + len(b)) - 9)) * (a.mean() - b.mean()) / math.sqrt(ss / dof))


def holm(pvalues: Sequence[float]) -> list[float]:
  """Holm's step-down adjustment: with the m finite p sorted p_(1) <= ... <= p_(m),
  p̃_(i) = min(1, max_{j <= i} (m - j + 1) p_(j)); NaNs stay NaN and do not count in m."""
  p = np.asarray(pvalues, dtype=float)
  out = np.full(len(p), math.nan)
  idx = [i for i in np.argsort(p, kind="stable") if math.isfinite(p[i])]
  running = 0.0
  for rank, i in enumerate(idx):
    running = max(running, min(1.0, (len(idx) - rank) * p[i]))
    out[i] = running
  return [float(v) for v in out]


def fisher(diverged: int, runs: int, base_diverged: int, base_runs: int) -> float:
  """Two-sided p of Fisher's exact test on the 2x2 table [[diverged, runs - diverged],
  [base_diverged, base_runs - base_diverged]] (scipy.stats.fisher_exact); NaN if a group has
  no runs."""
  if runs == 0 or base_runs == 0:
    return math.nan
  table = [[diverged, runs - diverged], [base_diverged, base_runs - base_diverged]]
  return float(sps.fisher_exact(table).pvalue)


def verdict(diff: float, p_adjusted: float, mode: str, alpha: float = ALPHA) -> str:
  """"better" or "worse" when the adjusted p < alpha, by the sign of `diff` (a log difference
  under --log) and `mode` ("min": lower is better); else "no evidence"."""
  if not p_adjusted < alpha or not math.isfinite(diff) or diff == 0:
    return "no evidence"
  return "better" if (diff < 0) == (mode == "min") else "worse"


@dataclass(frozen=True)
class Sample:
  """A group's final values and its run counts (`diverged` of `runs`, and of a threshold the
  `reached` of `runs` that reached it; None without a threshold)."""
  values: Sequence[float]
  diverged: int
  runs: int
  reached: int | None = None


def _reach_fisher(s: Sample, base: Sample) -> float:
  """Fisher's p of s's reached/runs against the baseline's; NaN unless both have counts."""
  if s.reached is None or base.reached is None:
    return math.nan
  return fisher(s.reached, s.runs, base.reached, base.runs)


def _counts(s: Sample) -> tuple[int, int] | None:
  """(reached, runs), or None without a threshold."""
  return None if s.reached is None else (s.reached, s.runs)


def against_baseline(base: Sample, others: dict[str, Sample], mode: str, log: bool = False,
                     alpha: float = ALPHA) -> list[Comparison]:
  """Each of `others` against `base` (in their order): Welch difference, CI and p on the
  (log) values, Hedges' g, Fisher's p of the divergence rates and (with `reached` counts) of
  the rates of reaching the threshold, each family of p Holm-adjusted over the comparisons;
  under `log` diff, lo and hi are ratios exp(·)."""
  b = transform(base.values, log)
  rows = []
  for name, s in others.items():
    x = transform(s.values, log)
    rows.append((name, len(x), *welch(x, b), hedges_g(x, b),
                 fisher(s.diverged, s.runs, base.diverged, base.runs), _reach_fisher(s, base)))
  adjusted = holm([r[5] for r in rows])
  div_adjusted = holm([r[7] for r in rows])
  reach_adjusted = holm([r[8] for r in rows])
  back = np.exp if log else (lambda v: v)
  return [Comparison(name, n, float(back(d)), float(back(lo)), float(back(hi)), g, p, pa,
                     verdict(d, pa, mode, alpha), dp, dpa, _counts(others[name]), _counts(base),
                     rp, rpa)
          for (name, n, d, lo, hi, p, g, dp, rp), pa, dpa, rpa
          in zip(rows, adjusted, div_adjusted, reach_adjusted)]


def censored_median(reached: Sequence[int], runs: int) -> int | None:
  """The median steps to a threshold when `runs - len(reached)` runs never reached it
  (censored: they count as reaching it after every observed step): the smallest step by which
  at least half of the runs had reached it, i.e. the ceil(runs / 2)-th smallest of `reached`
  (the Kaplan-Meier median for censoring after the last event); None if fewer than half did."""
  k = math.ceil(runs / 2)
  ordered = sorted(reached)
  return ordered[k - 1] if runs and len(ordered) >= k else None
