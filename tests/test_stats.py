"""rnn_research/experiments/stats.py: scipy's numbers, Holm by hand, the error rates it promises.

Fast: fixed data and a few thousand simulated comparisons of small groups; no training.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from rnn_research.experiments import stats, stats_table

A = [0.52, 0.61, 0.47, 0.58, 0.66]
B = [0.71, 0.64, 0.80, 0.69]


def test_t_interval_is_scipys():
  mean, sem = np.mean(A), sps.sem(A)
  assert stats.t_interval(A) == pytest.approx(sps.t.interval(0.95, len(A) - 1, mean, sem))
  assert stats.t_interval(A, 0.9) == pytest.approx(sps.t.interval(0.9, len(A) - 1, mean, sem))
  assert all(math.isnan(v) for v in stats.t_interval([1.0]))
  s = stats.describe(A)
  assert (s.n, s.mean, s.median) == (5, pytest.approx(np.mean(A)), pytest.approx(0.58))
  assert (s.lo, s.hi) == pytest.approx(stats.t_interval(A))
  # Under log: the geometric mean and exp of the interval of mean log x.
  g = stats.describe(A, log=True)
  assert g.mean == pytest.approx(sps.gmean(A))
  assert (g.lo, g.hi) == pytest.approx(np.exp(stats.t_interval(np.log(A))))
  assert stats.describe([]).n == 0 and math.isnan(stats.describe([]).mean)


def test_welch_is_scipys():
  d, lo, hi, p = stats.welch(A, B)
  ref = sps.ttest_ind(A, B, equal_var=False)
  assert d == pytest.approx(np.mean(A) - np.mean(B))
  assert p == pytest.approx(ref.pvalue)
  ci = ref.confidence_interval(0.95)
  assert (lo, hi) == pytest.approx((ci.low, ci.high))
  # Too few values, or no spread at all: no interval and no p.
  assert all(math.isnan(v) for v in stats.welch([1.0], B)[1:])
  assert all(math.isnan(v) for v in stats.welch([1.0, 1.0], [2.0, 2.0])[1:])


def test_hedges_g_by_hand():
  # means 2 and 4, both variances 1: s_p = 1, d = -2, J = 1 - 3 / (4 * 6 - 9) = 0.8.
  assert stats.hedges_g([1, 2, 3], [3, 4, 5]) == pytest.approx(-1.6)
  assert math.isnan(stats.hedges_g([1.0, 1.0], [1.0, 1.0]))


def test_holm_by_hand():
  # sorted 0.005, 0.01, 0.03, 0.04 -> 4*0.005, 3*0.01, 2*0.03, max(0.06, 1*0.04)
  assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
  assert stats.holm([0.6, 0.7]) == [1.0, 1.0]  # capped at 1, and monotone
  assert stats.holm([0.04]) == [0.04]
  out = stats.holm([0.02, math.nan, 0.5])  # NaN is no comparison: m = 2
  assert out[0] == pytest.approx(0.04) and math.isnan(out[1]) and out[2] == pytest.approx(0.5)
  assert stats.holm([]) == []


def test_fisher_is_scipys():
  assert stats.fisher(3, 5, 0, 5) == pytest.approx(sps.fisher_exact([[3, 2], [0, 5]]).pvalue)
  assert stats.fisher(0, 3, 0, 3) == pytest.approx(1.0)
  assert math.isnan(stats.fisher(0, 0, 1, 3))


def test_verdict_follows_the_metrics_direction():
  assert stats.verdict(-0.2, 0.01, "min") == "better"
  assert stats.verdict(-0.2, 0.01, "max") == "worse"
  assert stats.verdict(0.2, 0.01, "max") == "better"
  assert stats.verdict(0.2, 0.05, "max") == "no evidence"  # not below alpha
  assert stats.verdict(0.2, math.nan, "min") == "no evidence"


def test_against_baseline_holm_adjusts_and_logs():
  base = stats.Sample(B, diverged=0, runs=5)
  others = {"a": stats.Sample(A, 3, 5), "c": stats.Sample([0.70, 0.75, 0.66], 0, 3)}
  found = stats.against_baseline(base, others, "min")
  assert [c.group for c in found] == ["a", "c"]
  p = [sps.ttest_ind(A, B, equal_var=False).pvalue,
       sps.ttest_ind(others["c"].values, B, equal_var=False).pvalue]
  assert [c.p for c in found] == pytest.approx(p)
  assert [c.p_holm for c in found] == pytest.approx(stats.holm(p))
  a = found[0]
  assert (a.diff, a.lo, a.hi) == pytest.approx(stats.welch(A, B)[:3])
  assert a.g == pytest.approx(stats.hedges_g(A, B)) and a.n == 5
  assert a.verdict == "better" and found[1].verdict == "no evidence"
  fisher = [sps.fisher_exact([[3, 2], [0, 5]]).pvalue, 1.0]
  assert [c.div_p for c in found] == pytest.approx(fisher)
  assert [c.div_p_holm for c in found] == pytest.approx(stats.holm(fisher))
  # --log: ratios of geometric means, their CI and p from Welch on the logs.
  a = stats.against_baseline(base, others, "min", log=True)[0]
  d, lo, hi, p_log = stats.welch(np.log(A), np.log(B))
  assert (a.diff, a.lo, a.hi) == pytest.approx(np.exp([d, lo, hi]))
  assert a.diff == pytest.approx(sps.gmean(A) / sps.gmean(B)) and a.p == pytest.approx(p_log)
  with pytest.raises(ValueError, match="--log needs positive values"):
    stats.against_baseline(stats.Sample([0.0, 1.0], 0, 2), others, "min", log=True)


def _verdicts(shift: float, n: int, draws: int, seed: int) -> list[str]:
  """The verdict of `draws` comparisons of n values of N(-shift, 1) with n of N(0, 1)."""
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(draws):
    base, other = rng.normal(0, 1, n), rng.normal(-shift, 1, n)
    (found,) = stats.against_baseline(stats.Sample(base, 0, n), {"x": stats.Sample(other, 0, n)},
                                      "min")
    out.append(found.verdict)
  return out


def test_false_verdicts_about_alpha_under_no_difference():
  """Both groups from one distribution: "better" or "worse" about 5 % of the time (binomial
  sd for 2000 draws: 0.005; Welch's test is slightly conservative at n = 5)."""
  verdicts = _verdicts(0.0, 5, 2000, seed=0)
  rate = sum(v != "no evidence" for v in verdicts) / len(verdicts)
  assert 0.03 <= rate <= 0.07, rate


def test_detection_rate_is_the_power_theory_gives():
  """Shifted by 2 sd, n = 5 each: "better" at the rate of the t test's power, P(T' > t_crit)
  for T' ~ noncentral t(df = 2n - 2, ncp = shift / sqrt(2 / n)) (Welch's df is a little
  smaller, so its power a little lower; binomial sd 0.009)."""
  n, shift = 5, 2.0
  df = 2 * n - 2
  power = 1 - sps.nct.cdf(sps.t.ppf(0.975, df), df, shift / math.sqrt(2 / n))
  verdicts = _verdicts(shift, n, 2000, seed=1)
  rate = verdicts.count("better") / len(verdicts)
  assert abs(rate - power) < 0.05, (rate, power)
  assert "worse" not in verdicts  # the wrong tail: P(T' < -t_crit) is about 1e-6


def test_censored_steps_to_threshold():
  """Runs that never reached it count as reaching it after every observed step."""
  assert stats.censored_median([300, 100, 200], 5) == 300  # 3rd of 5: 2 censored
  assert stats.censored_median([100, 200], 5) is None  # fewer than half reached it
  assert stats.censored_median([100, 200, 300, 400], 4) == 200  # half by step 200
  assert stats.censored_median([100, 200], 3) == 200
  assert stats.censored_median([], 0) is None
  assert stats_table.reach_cell([300, 100, 200], 5) == "median 300 (2 of 5 censored)"
  assert stats_table.reach_cell([100], 3) == "not by half (2 of 3 censored)"


def test_markdown_states_n_effect_ci_adjusted_p_and_the_method():
  base = stats.Sample(B, 0, 4)
  found = stats.against_baseline(base, {"a": stats.Sample(A, 1, 5)}, "min")
  text = stats_table.markdown(found, "norm=none", 4, "min", log=False)
  head, rule, row, blank, legend = text.splitlines()
  assert head == ("| group | n | Δ vs norm=none [95% CI] | Hedges' g | p | p (Holm) | verdict "
                  "| diverged: p (Holm) |")
  c = found[0]
  assert row == (f"| a | 5 | {c.diff:+.3g} [{c.lo:+.3g}, {c.hi:+.3g}] | {c.g:+.2f} | {c.p:.2g} "
                 f"| {c.p_holm:.2g} | better | 1 (1) |")
  assert legend.startswith("Baseline norm=none (n=4). Effect: difference of means (Welch)")
  assert "Holm-adjusted over the 1 comparisons" in legend and "Fisher" in legend
  ratio = stats_table.markdown(stats.against_baseline(base, {"a": stats.Sample(A, 0, 5)}, "min", True),
                         "b", 4, "min", log=True)
  assert "| ratio to b [95% CI] |" in ratio and "× [" in ratio and "log values" in ratio


def test_against_baseline_tests_the_rates_of_reaching_a_threshold():
  """With `reached` counts: Fisher's exact p of reached/runs against the baseline's (scipy on
  the 2x2 table), Holm-adjusted as a family of its own; without them no such test or column."""
  base = stats.Sample(B, 0, 5, reached=1)
  others = {"a": stats.Sample(A, 3, 5, reached=5), "c": stats.Sample([0.7, 0.75], 0, 3, 2),
            "d": stats.Sample([0.7, 0.8], 0, 2)}  # no counts: no test, not in the family
  found = stats.against_baseline(base, others, "min")
  fisher = [sps.fisher_exact([[5, 0], [1, 4]]).pvalue, sps.fisher_exact([[2, 1], [1, 4]]).pvalue]
  assert [c.reach_p for c in found[:2]] == pytest.approx(fisher)
  assert [c.reach_p_holm for c in found[:2]] == pytest.approx(stats.holm(fisher))
  assert found[0].reach_p_holm == pytest.approx(2 * fisher[0])  # m = 2, not 3
  assert (found[0].reached, found[0].base_reached) == ((5, 5), (1, 5))
  assert found[2].reached is None and math.isnan(found[2].reach_p) and math.isnan(
      found[2].reach_p_holm)
  assert [c.div_p for c in found[:1]] == pytest.approx([sps.fisher_exact([[3, 2], [0, 5]]).pvalue])
  text = stats_table.markdown(found, "b", 5, "min", log=False, threshold=0.5)
  head, rule, row, *_, legend = text.splitlines()
  assert head.endswith("| diverged: p (Holm) | reached: p (Holm) |") and rule == "|" + "---|" * 9
  a = found[0]
  assert row.endswith(f"| 5/5 vs 1/5: {a.reach_p:.2g} ({a.reach_p_holm:.2g}) |")
  assert text.splitlines()[4].endswith("| – |")  # d: no counts
  assert ("reached: runs that reached 0.5 of all runs, against the baseline's" in legend
          and legend.endswith("Fisher's exact test, Holm-adjusted."))
  # No threshold: the new fields stay empty and the table is as before.
  plain = stats.against_baseline(stats.Sample(B, 0, 5), {"a": stats.Sample(A, 3, 5, 5)}, "min")
  assert plain[0].reached == (5, 5) and plain[0].base_reached is None
  assert math.isnan(plain[0].reach_p) and math.isnan(plain[0].reach_p_holm)
  none = stats.against_baseline(stats.Sample(B, 0, 5), {"a": stats.Sample(A, 3, 5)}, "min")[0]
  assert none.reached is None and none.base_reached is None and math.isnan(none.reach_p)
  assert "reached" not in stats_table.markdown([none], "b", 5, "min", log=False)
