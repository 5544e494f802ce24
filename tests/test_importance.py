"""Axis importance (`rnn_research.experiments.importance`): functional ANOVA shares, exact on a
full grid, from a ridge surrogate on random samples, and the markdown compare shows.

The synthetic metric is f = 3a + b c (+ an axis d that changes nothing). On a grid with a in
{0, 1}, b in {0, 1, 2}, c in {1, 3} (uniform measure): Var 3a = 9/4, and b c = Eb Ec + (b - Eb)
Ec + Eb (c - Ec) + (b - Eb)(c - Ec) gives Var f_b = Ec^2 Var b = 4 * 2/3, Var f_c = Eb^2 Var c
= 1, Var f_bc = Var b Var c = 2/3. With a, b, c ~ U(0, 1): Var 3a = 3/4, Var f_b = Var f_c =
1/4 * 1/12 = 1/48, Var f_bc = 1/144.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from rnn_research.experiments.importance import from_runs, importance, markdown
from rnn_research.sweep_spec import choice, integer, log_uniform, random_search

GRID_TOTAL = 9 / 4 + 8 / 3 + 1 + 2 / 3
GRID = {("a",): 9 / 4 / GRID_TOTAL, ("b",): 8 / 3 / GRID_TOTAL, ("c",): 1 / GRID_TOTAL,
        ("b", "c"): 2 / 3 / GRID_TOTAL}
UNIFORM_TOTAL = 3 / 4 + 2 / 48 + 1 / 144
UNIFORM = {("a",): 3 / 4 / UNIFORM_TOTAL, ("b",): 1 / 48 / UNIFORM_TOTAL,
           ("c",): 1 / 48 / UNIFORM_TOTAL, ("b", "c"): 1 / 144 / UNIFORM_TOTAL}


def f(p: dict[str, Any]) -> float:
  return 3 * p["a"] + p["b"] * p["c"]


def grid_points(seeds: tuple[float, ...] = (-0.5, 0.5)) -> tuple[list[dict], list[float]]:
  """Every combination, once per 'seed' (a noise that averages to 0 in each cell)."""
  points, values = [], []
  for a, b, c, d, noise in itertools.product([0, 1], [0, 1, 2], [1, 3], ["x", "y", "z"], seeds):
    points.append({"a": a, "b": b, "c": c, "d": d})
    values.append(f(points[-1]) + noise)
  return points, values


def uniform_points(n: int, seed: int) -> list[dict]:
  rng = np.random.default_rng(seed)
  return [{"a": rng.random(), "b": rng.random(), "c": rng.random(),
           "d": str(rng.choice(["x", "y", "z"]))} for _ in range(n)]


def as_dict(result) -> dict[tuple[str, ...], float]:
  return dict(result.shares)


def test_full_grid_is_exact_with_seeds_averaged():
  points, values = grid_points()
  result = importance(points, values)
  assert (result.method, result.points, result.values) == ("grid", 36, 72)
  shares = as_dict(result)
  assert len(shares) == 4 + 6  # every axis and every pair
  for axes, share in shares.items():
    assert share == pytest.approx(GRID.get(axes, 0.0), abs=1e-12), axes
  assert result.residual == pytest.approx(0.0, abs=1e-12)
  assert sum(shares.values()) + result.residual == pytest.approx(1.0)
  assert [s for _, s in result.shares] == sorted(shares.values(), reverse=True)
  assert result.shares[0][0] == ("b",)
  # the order of the points changes nothing
  order = np.random.default_rng(0).permutation(len(points))
  again = importance([points[i] for i in order], [values[i] for i in order])
  assert as_dict(again) == pytest.approx(shares)


def test_a_three_way_interaction_is_the_residual():
  points = [{"a": a, "b": b, "c": c} for a, b, c in itertools.product([-1, 1], repeat=3)]
  result = importance(points, [p["a"] * p["b"] * p["c"] for p in points])
  assert result.method == "grid"
  assert max(s for _, s in result.shares) == pytest.approx(0.0, abs=1e-12)
  assert result.residual == pytest.approx(1.0)


def test_random_samples_are_recovered_by_the_surrogate():
  points = uniform_points(300, seed=0)
  result = importance(points, [f(p) for p in points])
  assert result.method == "surrogate" and result.r2 > 0.999 and result.r2_loo > 0.999
  shares = as_dict(result)
  for axes, share in shares.items():
    assert share == pytest.approx(UNIFORM.get(axes, 0.0), abs=0.02), axes
  assert max(s for axes, s in shares.items() if "d" in axes) < 0.005  # the irrelevant axis
  assert sum(shares.values()) + result.residual == pytest.approx(1.0)


def test_noisy_random_samples_stay_close():
  points = uniform_points(300, seed=1)
  rng = np.random.default_rng(2)
  result = importance(points, [f(p) + rng.normal(0.0, 0.2) for p in points])
  assert 0.8 < result.r2_loo < 0.99
  shares = as_dict(result)
  for axes, share in shares.items():
    assert share == pytest.approx(UNIFORM.get(axes, 0.0), abs=0.05), axes


def test_a_grid_with_a_hole_uses_the_surrogate():
  points, values = grid_points(seeds=(0.0,))
  result = importance(points[1:], values[1:])
  assert result.method == "surrogate" and result.points == 35
  assert as_dict(result)[("a",)] == pytest.approx(GRID[("a",)], abs=0.05)


def test_a_random_search_on_a_log_scale():
  """The metric is quadratic in log10 of the learning rate (the surrogate takes its log)."""
  space = {"train.learning_rate": log_uniform(1e-4, 1e-1), "model.cell": choice(["lstm", "gru"]),
           "model.hidden_size": integer(16, 128)}
  points = random_search(n=40, seed=0, space=space)
  values = [(math.log10(p["train.learning_rate"]) + 2.5) ** 2
            + 0.3 * (p["model.cell"] == "gru") for p in points]
  result = importance(points, values)
  shares = as_dict(result)
  assert result.method == "surrogate" and result.r2_loo > 0.99
  assert result.shares[0] == (("train.learning_rate",), pytest.approx(0.9, abs=0.08))
  assert 0.02 < shares[("model.cell",)] < 0.2
  assert max(s for axes, s in shares.items() if "model.hidden_size" in axes) < 0.01


@pytest.mark.parametrize("points,values,match", [
    ([{"a": 1}, {"a": 2}], [1.0], "one value per point"),
    ([], [], "one value per point"),
    ([{"a": 1}, {"a": 1}], [1.0, 2.0], "no axis takes two values"),
    ([{"a": 1}, {"a": 2}], [1.0, 1.0], "does not vary"),
    ([{"a": 1}, {"a": 2}], [1.0, math.nan], "finite"),
    ([{"a": 1, "b": 1}, {"a": 2, "b": 2}], [1.0, 2.0], "too few for a surrogate"),
])
def test_bad_input_raises(points, values, match):
  with pytest.raises(ValueError, match=match):
    importance(points, values)


def test_markdown_says_how_the_shares_were_computed():
  text = markdown(importance(*grid_points()), "eval/loss")
  assert text.startswith("| axes | share of variance |\n|---|---|\n| b | 40.5% |")
  assert "| b × c | 10.1% |" in text and "| interactions of 3+ axes | 0.0% |" in text
  assert "Variance of eval/loss" in text and "exact on the full grid of 36 points (72 runs" in text
  points = uniform_points(30, seed=0)
  text = markdown(importance(points, [f(p) for p in points]))
  assert "from a surrogate" in text and "leave-one-out" in text and "3+" not in text
  rng = np.random.default_rng(0)
  text = markdown(importance(points, list(rng.normal(size=30))))
  assert "unreliable" in text


@dataclass
class Run:
  """The fields of compare's Run that from_runs reads."""
  name: str
  config: dict[str, Any]
  status: dict[str, Any] = field(default_factory=dict)
  scalars: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
  path: str = ""


def runs_of_a_grid() -> tuple[list[Run], dict[str, Any]]:
  runs, members = [], []
  for cell, lr, seed in itertools.product(["rnn", "gru"], [0.1, 0.01], [0, 1]):
    name = f"cell={cell},learning_rate={lr},seed={seed}"
    final = (1.0 if cell == "rnn" else 0.0) + (0.5 if lr == 0.1 else 0.0) + 0.01 * seed
    config = {"model": {"cell": cell, "hidden_size": 8}, "train": {"learning_rate": lr,
                                                                   "seed": seed}}
    runs.append(Run(name, config, {"state": "completed"}, {"eval/loss": [(0, 9.0), (10, final)]}))
    members.append({"name": name, "overrides": {"model.cell": cell, "train.learning_rate": lr,
                                                "train.seed": seed}})
  return runs, {"members": members}


def test_from_runs_takes_the_sweep_axes_and_the_final_values():
  runs, sweep = runs_of_a_grid()
  text = from_runs(runs, "eval/loss", "min", sweep)
  # Var of 1 * [cell] = 1/4, of 0.5 * [lr] = 1/16: shares 0.8 and 0.2
  assert "| model.cell | 80.0% |" in text and "| train.learning_rate | 20.0% |" in text
  assert "train.seed" not in text and "hidden_size" not in text
  assert "eval/loss (min is best)" in text and "full grid of 4 points (8 runs" in text
  assert from_runs(runs, "eval/loss", "min") == text  # without sweep.json: the keys that differ


def test_from_runs_leaves_out_runs_without_a_final_value():
  runs, sweep = runs_of_a_grid()
  runs[0].status["state"] = "diverged"
  runs[1].scalars = {}
  text = from_runs(runs, "eval/loss", "min", sweep)
  assert "surrogate" in text and "2 run(s) without a final value" in text
  for run in runs[2:]:
    run.status["state"] = "failed"
  text = from_runs(runs, "eval/loss", "min", sweep)
  assert text == ("Axis importance of eval/loss: not computed (no run has a final value of "
                  "eval/loss). 8 run(s) without a final value (diverged, failed or not started) "
                  "left out.\n")


def test_from_runs_takes_given_axes_and_the_log():
  runs, sweep = runs_of_a_grid()
  text = from_runs(runs, "eval/loss", "min", sweep, axes=["model.cell", "train.seed"])
  assert "| model.cell | 100.0% |" in text and "learning_rate" not in text
  assert "full grid of 2 points (8 runs" in text
  runs[0].scalars["eval/loss"][-1] = (10, -1.0)  # as gru,learning_rate=0.01,seed=0's 0.0
  text = from_runs(runs, "eval/loss", "min", sweep, log=True)
  assert "Variance of log eval/loss (min is best)" in text and "(6 runs," in text
  assert "2 run(s) without a final value (diverged, failed, not started or not positive)" in text
