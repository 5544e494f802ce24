"""Per-step errors of a `kalman` run (experiments/report_filtering.py).

Two tiny tanh-RNN kalman runs are trained once for the module (4 steps each, T = 60, 500
held-out sequences: the last eval batch is padded) and laid out as a sweep with sweep.json,
beside fabricated members (copies with another seed or state) that the figure must skip. The
per-step curves must add up to the task's own metrics and to what the runs logged at their
last eval; the references must order as theory says (RTS <= Kalman <= fixed gain).
"""
from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest

from configs import default
from rnn_research.experiments import report_filtering
from rnn_research.tasks import losses
from rnn_research.training import run_loader, train
from rnn_research.training.status import read_status, write_status

LENGTH, STARTUP, EVAL_SIZE, BATCH = 60, 10, 500, 16
LINEAR, MLP = "transition=linear,seed=0", "transition=mlp,seed=1"


def tiny(transition: str, seed: int):
  config = default.for_task("kalman", cell="rnn", hidden_size=4, steps=4, batch_size=BATCH)
  config.task.update(length=LENGTH, startup_steps=STARTUP, eval_size=EVAL_SIZE)
  config.model.transition = transition
  if transition == "mlp":
    config.model.mlp_hidden = 4
  config.train.seed = seed
  return config


def _copy(root, source: str, name: str, seed: int, state: str | None = None) -> None:
  """A fabricated member: `source` copied to `name` with train.seed = seed (and `state`)."""
  shutil.copytree(root / source, root / name)
  config = json.loads((root / name / "config.json").read_text())
  config["train"]["seed"] = seed
  (root / name / "config.json").write_text(json.dumps(config))
  if state:
    write_status(str(root / name), state=state)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
  """linear: seed 0 (trained) and seed 1 (a copy); mlp: seed 0 (a copy, diverged) and seed 1
  (trained); a group whose only run is preempted."""
  root = tmp_path_factory.mktemp("sweep")
  train.train_and_evaluate(tiny("linear", 0), str(root / LINEAR))
  train.train_and_evaluate(tiny("mlp", 1), str(root / MLP))
  _copy(root, LINEAR, "transition=linear,seed=1", 1)
  _copy(root, MLP, "transition=mlp,seed=0", 0, state="diverged")
  _copy(root, LINEAR, "hidden_size=8,seed=0", 0, state="preempted")
  mlp = {"model.transition": "mlp", "model.mlp_hidden": 4}
  members = [("transition=linear,seed=0", {"model.transition": "linear", "train.seed": 0}),
             ("transition=linear,seed=1", {"model.transition": "linear", "train.seed": 1}),
             ("transition=mlp,seed=0", {**mlp, "train.seed": 0}),
             ("transition=mlp,seed=1", {**mlp, "train.seed": 1}),
             ("hidden_size=8,seed=0", {"model.hidden_size": 8, "train.seed": 0})]
  (root / "sweep.json").write_text(json.dumps(
      {"config": "x.py", "members": [{"name": n, "overrides": o} for n, o in members]}))
  return root


@pytest.fixture(scope="module")
def linear_run(sweep):
  config = run_loader.load_config(str(sweep / LINEAR))
  task, model = run_loader.load_model(str(sweep / LINEAR), config)
  return task, model, report_filtering.per_step_mse(model, task)


def test_step_mse_is_a_decomposition_of_the_weighted_mse():
  """sum_t W_t MSE_t / sum_t W_t is the pooled weighted MSE, padding rows and unweighted
  steps included; a step without weight is NaN."""
  rng = np.random.default_rng(0)
  est, y = rng.normal(size=(2, 7, 9, 3)).astype(np.float32)
  weight = (rng.uniform(size=(7, 9)) > 0.3).astype(np.float32)
  weight[5:] = 0.0   # padding rows
  weight[:, 4] = 0.0  # a step nobody scores
  curve = report_filtering.step_mse(est, {"y": y, "weight": weight})
  assert curve.shape == (9,) and np.isnan(curve[4]) and np.isfinite(np.delete(curve, 4)).all()
  w = weight.sum(0)
  pooled = np.nansum(w * curve) / w.sum()
  assert pooled == pytest.approx(float(losses.weighted_mse(est, y, weight)), rel=1e-5)
  for t in (0, 8):
    assert curve[t] == pytest.approx(float(losses.weighted_mse(
        est[:, t:t + 1], y[:, t:t + 1], weight[:, t:t + 1])), rel=1e-5)


def test_per_step_mse_adds_up_to_the_task_metrics(linear_run, sweep):
  task, model, curves = linear_run
  assert sorted(curves) == sorted(report_filtering.CURVES + ("weight",))
  assert all(curves[k].shape == (LENGTH,) for k in curves)
  np.testing.assert_array_equal(curves["weight"], np.full(LENGTH, EVAL_SIZE))
  data = task._eval
  assert len(data["x"]) == EVAL_SIZE and EVAL_SIZE % BATCH  # the last eval batch is padded
  own = [float(losses.weighted_mse(task._kalman[:, t], data["y"][:, t], data["weight"][:, t]))
         for t in range(LENGTH)]
  np.testing.assert_allclose(curves["kalman"], own, rtol=1e-5)
  ys = report_filtering.predictions(model, task)
  assert ys.shape == data["y"].shape
  metrics = task.metrics(ys, data)
  pooled = {k: np.sum(curves["weight"] * curves[k]) / curves["weight"].sum()
            for k in report_filtering.CURVES}
  assert pooled["model"] == pytest.approx(float(metrics["mse"]), rel=1e-5)
  for k in ("kalman", "fixed_gain", "rts"):
    assert pooled[k] == pytest.approx(float(metrics[f"{k}_mse"]), rel=1e-5)
  # the predictions are the ones the trainer scored at its last eval (= the last checkpoint)
  logged = read_status(str(sweep / LINEAR))["metrics"]
  assert pooled["model"] == pytest.approx(logged["mse"], rel=1e-5)
  assert pooled["model"] > 1.2 * pooled["kalman"]  # 4 steps: far from the filter


def test_references_order_as_theory_says(linear_run):
  _, _, c = linear_run
  kf, fixed, rts = c["kalman"], c["fixed_gain"], c["rts"]
  assert (rts[:-1] < kf[:-1]).all()                 # the smoother sees the future ...
  assert rts[-1] == pytest.approx(kf[-1], rel=1e-6)  # ... except at the last step
  assert (fixed[:5] > 1.01 * kf[:5]).all()          # K_inf is the wrong gain at the start
  np.testing.assert_allclose(fixed[30:], kf[30:], rtol=1e-3)  # and the right one later


def _table(markdown: str) -> dict[str, list[str]]:
  rows = [line for line in markdown.splitlines() if line.startswith("| ")][1:]
  cells = [[c.strip() for c in row.strip("|").split("|")] for row in rows]
  return {c[0]: c[1:] for c in cells}


def test_figure_plots_each_group_and_its_ratios_match_the_logged_ones(sweep, tmp_path):
  png = tmp_path / "docs" / "report" / "k" / "per_step.png"
  md = report_filtering.figure(str(sweep), str(png), link="report/k/per_step.png")
  assert png.read_bytes().startswith(b"\x89PNG")
  assert md.splitlines()[0] == "![per-step](report/k/per_step.png)"
  table = _table(md)
  assert sorted(table) == ["hidden_size=8", "transition=linear", "transition=mlp,mlp_hidden=4"]
  assert table["hidden_size=8"][0] == "no completed run"
  for group, run in (("transition=linear", LINEAR), ("transition=mlp,mlp_hidden=4", MLP)):
    name, start, steady, overall = table[group]
    assert name == f"`{run}`"  # the completed run of the lowest seed
    logged = read_status(str(sweep / run))["metrics"]
    for value, key in ((start, "mse_over_kalman_start"), (steady, "mse_over_kalman_steady"),
                       (overall, "mse_over_kalman")):
      assert float(value) == pytest.approx(logged[key], rel=1e-4), (group, key)
  assert table["transition=linear"][1:] != table["transition=mlp,mlp_hidden=4"][1:]
  assert re.search(rf"start-up: t < {STARTUP}\.", md)


def test_ratios_match_the_logged_ones_unrounded(linear_run, sweep):
  _, _, curves = linear_run
  r = report_filtering.ratios(curves, STARTUP)
  logged = read_status(str(sweep / LINEAR))["metrics"]
  assert r["start"] == pytest.approx(logged["mse_over_kalman_start"], rel=1e-5)
  assert r["steady"] == pytest.approx(logged["mse_over_kalman_steady"], rel=1e-5)
  assert r["overall"] == pytest.approx(logged["mse_over_kalman"], rel=1e-5)
  assert np.isnan(report_filtering.ratios(curves, 0)["start"])  # no start-up steps
  assert report_filtering.ratio(curves, "kalman") == pytest.approx(1.0)


def test_figure_defaults_the_link_to_the_file_name_and_refuses_other_tasks(sweep, tmp_path):
  png = tmp_path / "out" / "kalman_steps.png"
  md = report_filtering.figure(str(sweep), str(png), group_by=["model.transition"])
  assert md.splitlines()[0] == "![per-step](kalman_steps.png)" and png.is_file()
  # hidden_size=8 (preempted) is a linear member too: two groups
  assert sorted(_table(md)) == ["transition=linear", "transition=mlp"]
  other = tmp_path / "adding"
  (other / "run").mkdir(parents=True)
  (other / "run" / "config.json").write_text(json.dumps(
      {"task": {"name": "adding"}, "model": {}, "train": {"seed": 0}}))
  write_status(str(other / "run"), state="completed", step=1, metrics={})
  with pytest.raises(ValueError, match="not a kalman run"):
    report_filtering.figure(str(other), str(tmp_path / "x.png"))


def test_plot_draws_each_groups_references_when_their_tasks_differ(tmp_path):
  """Groups of different task configs (another system, another start-up) each get their own
  reference lines and start-up marker."""
  t = np.arange(20.0)
  curves = {"model": 2 + 0 * t, "kalman": 1 + 0 * t, "fixed_gain": 1 + np.exp(-t),
            "rts": 0.6 + 0 * t, "weight": 8 + 0 * t}
  drawn = [("r=0.5", "a", curves, {"r": 0.5, "startup_steps": 5}),
           ("r=1", "b", {**curves, "model": 3 + 0 * t}, {"r": 1.0, "startup_steps": 8})]
  report_filtering._plot(drawn, str(tmp_path / "p.png"))
  assert (tmp_path / "p.png").read_bytes().startswith(b"\x89PNG")
  assert report_filtering.ratios(curves, 5) == pytest.approx(
      {"start": 2.0, "steady": 2.0, "overall": 2.0})
  assert report_filtering.ratios(curves, 5, "fixed_gain")["start"] == pytest.approx(
      1 + np.exp(-t[:5]).sum() / 5)
