"""Closed-loop rollouts (`training/rollout.py`, `training/rollout_plot.py`, `rollout.py`).

Fast: the closed loop of untrained models against their full-sequence (open-loop) output, its
dependence on the warm-up inputs only, the filters' closed loops (EKF prediction-only, held
persistence), the refusals of a wrong run, the PNG. Slow (subprocesses): the CLI on tiny
trained pendulum and temperature runs, and its one-line refusals.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from rnn_research.core import models
from rnn_research.tasks import pendulum
from rnn_research.tasks.base import TASKS
from rnn_research.training import rollout, rollout_plot

ROOT = Path(__file__).resolve().parents[1]
T, W = 12, 5
FEEDBACK = {"pendulum": (2, 3, rollout.pendulum_feedback),
            "temperature": (1, 1, rollout.temperature_feedback)}


def model_for(task: str, cell: str = "gru", layers: int = 2) -> nnx.Module:
  f, o, _ = FEEDBACK[task]
  m = models.build(dict(cell=cell, hidden_size=8, num_layers=layers), f, o, rngs=nnx.Rngs(1))
  m.eval()
  return m


def inputs(task: str, seed: int = 0, batch: int = 3) -> np.ndarray:
  return np.random.default_rng(seed).normal(size=(batch, T, FEEDBACK[task][0])).astype(np.float32)


def open_loop(model, xs) -> np.ndarray:
  return np.asarray(model(jnp.asarray(xs)))


# ------------------------------------------------------------------------ the closed loop


@pytest.mark.parametrize("task", ["pendulum", "temperature"])
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_without_a_horizon_the_closed_loop_is_the_open_loop(task, cell):
  model, xs = model_for(task, cell), inputs(task)
  out = rollout.closed_loop(model, xs, T, FEEDBACK[task][2])   # warm-up covers every step
  np.testing.assert_allclose(out, open_loop(model, xs), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("task", ["pendulum", "temperature"])
def test_feeding_back_the_true_inputs_is_the_open_loop(task):
  model, xs = model_for(task), inputs(task)
  out = rollout.closed_loop(model, xs, 1, lambda y, x: x)      # every later step "fed back"
  np.testing.assert_allclose(out, open_loop(model, xs), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("task", ["pendulum", "temperature"])
def test_the_closed_loop_is_the_open_loop_on_the_inputs_it_fed_itself(task):
  """ys = model(x_0..x_{W-1}, f(y_{W-1}), .., f(y_{T-2})): each fed input is the previous output."""
  model, xs = model_for(task), inputs(task)
  feedback = FEEDBACK[task][2]
  ys = rollout.closed_loop(model, xs, W, feedback)
  fed = np.asarray(feedback(jnp.asarray(ys[:, W - 1:T - 1].reshape(-1, ys.shape[-1])), None))
  xs_fed = np.concatenate([xs[:, :W], fed.reshape(len(xs), T - W, -1)], 1)
  np.testing.assert_allclose(ys, open_loop(model, xs_fed), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("task", ["pendulum", "temperature"])
def test_the_closed_loop_reads_only_the_warmup_inputs(task):
  model, xs = model_for(task), inputs(task)
  feedback = FEEDBACK[task][2]
  ys = rollout.closed_loop(model, xs, W, feedback)
  later = xs.copy()
  later[:, W:] = inputs(task, seed=9)[:, W:] * 10
  assert np.array_equal(rollout.closed_loop(model, later, W, feedback), ys)
  last = xs.copy()
  last[:, W - 1] += 1.0                                       # the last real input matters
  changed = rollout.closed_loop(model, last, W, feedback)
  assert np.array_equal(changed[:, :W - 1], ys[:, :W - 1])
  assert np.all(np.abs(changed[:, W:] - ys[:, W:]).max(axis=(1, 2)) > 1e-6)


def test_pendulum_feedback_is_the_estimated_angle_on_the_circle():
  y = jnp.array([[0.3, -0.4, 5.0], [-2.0, 0.0, 0.0], [0.6, 0.8, -1.0]])
  fed = np.asarray(rollout.pendulum_feedback(y, None))
  np.testing.assert_allclose(np.hypot(fed[:, 0], fed[:, 1]), 1.0, rtol=1e-6)
  np.testing.assert_allclose(fed, [[0.6, -0.8], [-1.0, 0.0], [0.6, 0.8]], atol=1e-6)


def test_warmup_below_one_is_refused():
  with pytest.raises(ValueError, match="warmup must be >= 1"):
    rollout.closed_loop(model_for("temperature"), inputs("temperature"), 0,
                        rollout.temperature_feedback)


# ------------------------------------------------------------------------- the filters


@pytest.fixture(scope="module")
def pendulum_task():
  return TASKS.get("pendulum")(dict(length=T, eval_size=6), batch_size=4, seed=0)


def test_ekf_closed_loop_filters_then_predicts_the_noise_free_motion(pendulum_task):
  c = pendulum_task.cfg
  xs = pendulum_task.eval_batches()[0]["x"]
  est = rollout.ekf_closed_loop(pendulum_task, xs, W)
  np.testing.assert_allclose(est[:, :W], pendulum_task.filter(xs)[:, :W], rtol=1e-6, atol=1e-6)
  theta, omega = np.arctan2(est[:, W - 1, 0], est[:, W - 1, 1]), est[:, W - 1, 2]
  for t in range(W, T):  # the noise-free semi-implicit Euler step, written out
    omega = (1 - c.dt * c.damping) * omega - c.dt * c.natural_frequency**2 * np.sin(theta)
    theta = theta + c.dt * omega
    np.testing.assert_allclose(est[:, t], np.stack([np.sin(theta), np.cos(theta), omega], -1),
                               rtol=1e-5, atol=1e-5)
  noisy = xs.copy()
  noisy[:, W:] += 1.0
  assert np.array_equal(rollout.ekf_closed_loop(pendulum_task, noisy, W), est)
  np.testing.assert_allclose(rollout.ekf_closed_loop(pendulum_task, xs, T),
                             pendulum_task.filter(xs), rtol=1e-6, atol=1e-6)


def test_predict_mean_is_the_simulators_noise_free_step():
  task = TASKS.get("pendulum")(dict(length=T, eval_size=4, process_noise=0.0), batch_size=4,
                               seed=0)
  y = task.sample(np.random.default_rng(3), 5)["y"].astype(np.float64)
  c = task.cfg
  theta, omega = pendulum.predict_mean(np.arctan2(y[:, :-1, 0], y[:, :-1, 1]), y[:, :-1, 2],
                                       c.dt, c.natural_frequency, c.damping)
  np.testing.assert_allclose(np.stack([np.sin(theta), np.cos(theta), omega], -1), y[:, 1:],
                             atol=1e-5)


def test_persistence_holds_the_last_observed_value():
  xs = np.arange(2 * T, dtype=np.float32).reshape(2, T, 1)
  held = rollout.persistence(None, xs, W)
  assert np.array_equal(held[:, :W], xs[:, :W])
  assert np.all(held[:, W:] == xs[:, W - 1:W])


def test_horizon_mse_counts_the_horizon_only():
  truth = np.zeros((2, 6, 1), np.float32)
  ys = np.zeros_like(truth)
  ys[:, :3] = 100.0                       # the warm-up: not counted
  ys[0, 3:], ys[1, 5] = 2.0, 3.0
  r = rollout.Rollout("temperature", "persistence", np.arange(2), 3, truth, ys, truth)
  np.testing.assert_allclose(r.horizon_mse(ys), [4.0, 3.0])


# ------------------------------------------------------------------ refusals and the PNG


def config_of(task: str, **model) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({"task": {"name": task}, "model": model})


@pytest.mark.parametrize("task,words", [("charlm", "rnn_research.sample"),
                                        ("kalman", "pendulum or temperature")])
def test_a_run_of_another_task_is_refused(task, words):
  with pytest.raises(ValueError, match=words):
    rollout.check_run(config_of(task), "runs/x")
  rollout.check_run(config_of("pendulum", bidirectional="none"), "runs/x")


def test_a_bidirectional_model_is_refused():
  with pytest.raises(ValueError, match="bidirectional"):
    rollout.check_run(config_of("temperature", bidirectional="concat"), "runs/x")


@pytest.mark.parametrize("task,k", [("pendulum", 5), ("temperature", 1)])
def test_the_png_is_written(tmp_path, task, k):
  rng = np.random.default_rng(0)
  o = FEEDBACK[task][1]
  truth, model, filt = (rng.normal(size=(k, T, o)).astype(np.float32) for _ in range(3))
  result = rollout.Rollout(task, "ekf", np.arange(k), W, truth, model, filt)
  path = tmp_path / "sub" / "r.png"
  rollout_plot.write_png(result, str(path))
  data = path.read_bytes()
  assert data[:8] == b"\x89PNG\r\n\x1a\n"
  width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
  panels = min(k, rollout_plot.MAX_PANELS)
  assert width > 300 * panels and height > 200 * len(rollout_plot.CHANNELS[task])
  assert [p.name for p in path.parent.iterdir()] == ["r.png"]   # no temporary file left


# ------------------------------------------------------------------------------ the CLI


def _run(module: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
  env = dict(os.environ)
  env.setdefault("JAX_PLATFORMS", "cpu")
  return subprocess.run([sys.executable, "-m", f"rnn_research.{module}", *args], cwd=ROOT,
                        env=env, capture_output=True, text=True, timeout=timeout)


def _refused(proc: subprocess.CompletedProcess, *words: str) -> None:
  assert proc.returncode == 2, proc.stderr[-2000:]
  lines = [line for line in proc.stderr.splitlines() if line.strip()]
  assert len(lines) == 1 and lines[0].startswith("bad input: "), proc.stderr
  assert all(w in lines[0] for w in words), lines[0]
  assert not proc.stdout


TINY = {"train.steps": 3, "train.batch_size": 4, "model.hidden_size": 4, "train.eval_every": 3,
        "train.log_every": 1, "train.checkpoint_every": 3, "train.diagnostics_every": 3}
TINY_TASK = {"pendulum": {"task.length": 20, "task.eval_size": 6},
             "temperature": {"task.length": 24}}


def _train(tmp_path_factory, task: str) -> Path:
  workdir = tmp_path_factory.mktemp(task) / "run"
  overrides = {**TINY, **TINY_TASK[task]}
  proc = _run("main", f"--config=configs/tasks/{task}.py", f"--workdir={workdir}",
              *(f"--config.{k}={v}" for k, v in overrides.items()))
  assert proc.returncode == 0, proc.stderr[-3000:]
  return workdir


@pytest.fixture(scope="module")
def pendulum_run(tmp_path_factory) -> Path:
  return _train(tmp_path_factory, "pendulum")


@pytest.fixture(scope="module")
def temperature_run(tmp_path_factory) -> Path:
  return _train(tmp_path_factory, "temperature")


@pytest.mark.slow
@pytest.mark.parametrize("task", ["pendulum", "temperature"])
def test_cli_writes_the_png_and_the_mses(request, tmp_path, task):
  workdir = request.getfixturevalue(f"{task}_run")
  out = tmp_path / "rollout.png"
  args = (f"--workdir={workdir}", "--warmup=8", "--horizon=10", "--num_rollouts=5", "--seed=1",
          f"--out={out}")
  proc = _run("rollout", *args)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  lines = proc.stdout.splitlines()
  rows = [line.split() for line in lines[2:7]]
  assert all(len(r) == 3 and all(np.isfinite(float(v)) for v in r[1:]) for r in rows), lines
  assert len({r[0] for r in rows}) == 5                        # 5 different held-out sequences
  filt = "ekf" if task == "pendulum" else "persistence"
  assert lines[7].startswith("mean model MSE:") and lines[8].startswith(f"mean {filt} MSE:")
  assert "95% CI [" in lines[7] and lines[-1] == f"plot: {out}"
  assert _run("rollout", *args).stdout == proc.stdout            # seeded: the same draw


@pytest.mark.slow
def test_cli_refuses_bad_flags_and_writes_nothing(tmp_path, pendulum_run):
  out = tmp_path / "r.png"
  base = (f"--workdir={pendulum_run}", f"--out={out}")
  _refused(_run("rollout", *base, "--warmup=0"), "--warmup", ">= 1")
  _refused(_run("rollout", *base, "--horizon=0"), "--horizon", ">= 1")
  _refused(_run("rollout", *base, "--warmup=15", "--horizon=6"), "at most 20")
  _refused(_run("rollout", *base, "--warmup=5", "--horizon=5", "--num_rollouts=7"),
           "--num_rollouts", "[1, 6]")
  assert not out.exists()


@pytest.mark.slow
def test_cli_refuses_a_wrong_run(tmp_path, pendulum_run):
  config = json.loads((pendulum_run / "config.json").read_text())
  for name, change, words in [
      ("charlm", {"task": {**config["task"], "name": "charlm"}}, ("charlm", "rnn_research.sample")),
      ("bidi", {"model": {**config["model"], "bidirectional": "concat"}}, ("bidirectional",)),
      ("no_ckpt", {}, ("no checkpoint",))]:
    run = tmp_path / name
    run.mkdir()
    (run / "config.json").write_text(json.dumps({**config, **change}))
    _refused(_run("rollout", f"--workdir={run}"), *words)
    assert sorted(p.name for p in run.iterdir()) == ["config.json"]
  _refused(_run("rollout", f"--workdir={tmp_path / 'absent'}"), "does not exist")
  broken = tmp_path / "broken"
  shutil.copytree(pendulum_run, broken)
  for path in (broken / "checkpoints").rglob("*"):
    if path.is_file() and path.stat().st_size > 0:
      path.write_bytes(b"garbage")
  _refused(_run("rollout", f"--workdir={broken}"), "no checkpoint in", "could be restored")
  assert not (broken / "rollout.png").exists()
