"""The statistics of `compare` as markdown: a group's cells (n, mean [95% CI], median, best,
steps to a threshold) and the table of comparisons with the baseline (stats.against_baseline)."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from rnn_research.experiments.stats import ALPHA, Comparison, censored_median, describe


NO_BASELINE = ("No baseline: give --baseline=<group> or define get_baseline() in the sweep "
               "file for differences, 95% CIs and tests against it.")


def mean_std(values: Sequence[float]) -> tuple[float, float] | None:
  """Mean and sample standard deviation (ddof=1; 0 for one value); None if empty."""
  if len(values) == 0:
    return None
  std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
  return float(np.mean(values)), std


def mean_std_cell(values: Sequence[float]) -> str:
  """`0.6 ± 0.1` (the mean alone for one value, – for none)."""
  ms = mean_std(values)
  if ms is None:
    return "–"
  return f"{ms[0]:.4g} ± {ms[1]:.2g}" if len(values) > 1 else f"{ms[0]:.4g}"


def final_cells(values: Sequence[float], log: bool) -> list[str]:
  """The n, mean [95% CI] and median cells of a group (the geometric mean under `log`)."""
  s = describe(values, log)
  if not s.n:
    return ["0", "–", "–"]
  ci = f" [{s.lo:.4g}, {s.hi:.4g}]" if s.n > 1 else ""
  return [str(s.n), f"{s.mean:.4g}{ci}", f"{s.median:.4g}"]


def reach_cell(reached: Sequence[int], runs: int) -> str:
  """`median 150 (1 of 3 censored)` (censored_median); `not by half (...)` if it is None."""
  median = censored_median(reached, runs)
  censored = f"({runs - len(reached)} of {runs} censored)"
  return f"median {median} {censored}" if median is not None else f"not by half {censored}"


def _p(p: float) -> str:
  return f"{p:.2g}" if math.isfinite(p) else "–"


def _effect(c: Comparison, log: bool) -> str:
  """`-0.3 [-0.5, -0.1]`, or under `log` the ratio `0.9372× [0.8981, 0.9779]`."""
  if not math.isfinite(c.diff):
    return "–"
  num = "{:.4g}" if log else "{:+.3g}"  # a ratio near 1 needs its 4th digit
  ci = f" [{num.format(c.lo)}, {num.format(c.hi)}]" if math.isfinite(c.lo) else ""
  return num.format(c.diff) + ("×" if log else "") + ci


def reached_cell(c: Comparison) -> str:
  """`3/3 vs 0/3: 0.1 (0.1)`: reached/runs of the group vs the baseline's, Fisher's p (Holm's);
  – without counts."""
  if c.reached is None or c.base_reached is None:
    return "–"
  (k, n), (k_base, n_base) = c.reached, c.base_reached
  return f"{k}/{n} vs {k_base}/{n_base}: {_p(c.reach_p)} ({_p(c.reach_p_holm)})"


def markdown(found: list[Comparison], base: str, n_base: int, mode: str, log: bool,
             threshold: float | None = None) -> str:
  """The comparisons with the baseline `base` (of `n_base` values) as a markdown table: n,
  effect [95% CI], g, p, Holm's p, verdict, Fisher's p (Holm's) of diverging and, given a
  `threshold`, of reaching it (reached_cell), and a one-line legend."""
  effect = f"ratio to {base} [95% CI]" if log else f"Δ vs {base} [95% CI]"
  reach = threshold is not None
  lines = [f"| group | n | {effect} | Hedges' g | p | p (Holm) | verdict | diverged: p (Holm) |"
           + (" reached: p (Holm) |" if reach else ""), "|" + "---|" * (9 if reach else 8)]
  for c in found:
    g = f"{c.g:+.2f}" if math.isfinite(c.g) else "–"
    lines.append(f"| {c.group} | {c.n} | {_effect(c, log)} | {g} | {_p(c.p)} | {_p(c.p_holm)} "
                 f"| {c.verdict} | {_p(c.div_p)} ({_p(c.div_p_holm)}) |"
                 + (f" {reached_cell(c)} |" if reach else ""))
  what = ("ratio of geometric means (Welch, g and p on log values)" if log
          else "difference of means (Welch)")
  legend = (f"Baseline {base} (n={n_base}). Effect: {what} with its 95% CI (unadjusted); "
            f"g: Hedges' g; p: Welch's t-test, Holm-adjusted over the {len(found)} comparisons; "
            f"verdict at α = {ALPHA:g}, {'lower' if mode == 'min' else 'higher'} is better; "
            "diverged: Fisher's exact test of diverged/runs, Holm-adjusted.")
  if reach:
    legend += (f" reached: runs that reached {threshold:g} of all runs, against the baseline's "
               "(a diverged or failed run counts as not reached); Fisher's exact test, "
               "Holm-adjusted.")
  return "\n".join(lines) + "\n\n" + legend
