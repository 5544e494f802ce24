"""The trainer in-process: determinism, learning, the optimizer's clipping and choices, and the
gradient diagnostics (lecture section 2: dying vs exploding gradients)."""
from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import default
from rnn_research.training import diagnostics, optim, train
from rnn_research.training.metric_writer import read_scalars
from rnn_research.training.status import read_status


def tiny_kalman(seed: int = 0, steps: int = 6):
  config = default.base("kalman")
  config.task.length = 10
  config.task.eval_size = 8
  config.model.hidden_size = 4
  t = config.train
  t.steps, t.batch_size, t.seed = steps, 4, seed
  t.eval_every = t.checkpoint_every = t.diagnostics_every = steps
  t.log_every = 2
  return config


# --------------------------------------------------------------------------- train_and_evaluate


@pytest.mark.slow  # three whole training runs
def test_same_seed_same_metrics_other_seed_differs(tmp_path):
  first = train.train_and_evaluate(tiny_kalman(seed=0), str(tmp_path / "a"))
  again = train.train_and_evaluate(tiny_kalman(seed=0), str(tmp_path / "b"))
  other = train.train_and_evaluate(tiny_kalman(seed=1), str(tmp_path / "c"))
  assert set(first) >= {"loss", "mse", "kalman_mse", "mse_over_kalman"}
  assert all(np.isfinite(v) for v in first.values())
  assert first == again
  assert other["loss"] != first["loss"]


@pytest.mark.slow  # trains a whole run first
def test_resumed_at_the_end_reports_the_same_metrics(tmp_path):
  config = tiny_kalman()
  first = train.train_and_evaluate(config, str(tmp_path))
  assert train.train_and_evaluate(config, str(tmp_path)) == first  # nothing left to train


@pytest.mark.slow  # a whole training run to convergence
def test_default_config_learns_kalman_filter(tmp_path):
  config = default.get_config()
  config.unlock()
  t = config.train
  t.steps = 200
  t.eval_every = t.checkpoint_every = t.diagnostics_every = t.log_every = t.steps
  metrics = train.train_and_evaluate(config, str(tmp_path))
  # 1.0 is the exact Kalman filter; the untrained model is around 3.
  assert metrics["mse_over_kalman"] < 1.2, metrics


def test_bad_train_config_raises_before_writing(tmp_path):
  config = tiny_kalman()
  config.train.optimizer = "rmsprop"
  with pytest.raises(ValueError, match="valid choices: adam, adamw, sgd"):
    train.train_and_evaluate(config, str(tmp_path / "run"))
  config = tiny_kalman()
  config.train.batch_size = 0
  with pytest.raises(ValueError, match="batch_size"):
    train.train_and_evaluate(config, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------------- optim


def sgd_cfg(**changes):
  cfg = default.base("kalman").train
  cfg.optimizer, cfg.learning_rate, cfg.momentum, cfg.schedule = "sgd", 1.0, 0.0, "constant"
  cfg.update(changes)
  return cfg


@pytest.mark.parametrize("schedule", optim.SCHEDULES)
def test_learning_rate_as_an_input_is_the_constant_bit_for_bit(schedule):
  """The step takes the peak rate as an input (one program for a random search over it); it
  computes exactly what the same step with the rate baked in as a constant computes."""
  config = tiny_kalman(steps=20)
  config.train.update(schedule=schedule, warmup_steps=5, learning_rate=0.0123)
  task, graphdef, state, optimizer = train.init_state(config)
  as_input = jax.jit(train.train_step_fn(graphdef, task, optimizer))
  baked = jax.jit(train.train_step_fn(graphdef, task, lambda _: optim.optimizer(config.train)))
  lr, seed = np.float32(config.train.learning_rate), np.uint32(0)
  a = b = state
  for step in range(8):  # through the warm-up and into the decay
    a, metrics_a = as_input(a, task.train_batch(step), seed, lr)
    b, metrics_b = baked(b, task.train_batch(step), seed, lr)
  for x, y in zip(jax.tree.leaves((a, metrics_a)), jax.tree.leaves((b, metrics_b))):
    np.testing.assert_array_equal(x, y)
  # The rate is not baked in anywhere: a config at another rate lowers to the same program.
  config.train.learning_rate = 0.05
  _, _, _, other = train.init_state(config)
  program = lambda opt: jax.jit(train.train_step_fn(graphdef, task, opt)).lower(  # noqa: E731
      state, task.train_batch(0), seed, lr).as_text()
  assert program(other) == program(optimizer)
  assert program(lambda _: optim.optimizer(config.train)) != program(optimizer)


def test_warmup_cosine_is_optax_warmup_cosine_decay():
  cfg = sgd_cfg(schedule="warmup_cosine", warmup_steps=7, learning_rate=0.0123, steps=50)
  ours, theirs = optim.schedule(cfg), optax.warmup_cosine_decay_schedule(0.0, 0.0123, 7, 50)
  for step in range(0, 60, 3):
    assert float(ours(step)) == float(theirs(step))


def apply(cfg, grads):
  """The update of one step of `optim.optimizer(cfg)` (sgd, lr 1: minus the processed grads)."""
  tx = optim.optimizer(cfg)
  params = jax.tree.map(jnp.zeros_like, grads)
  updates, _ = tx.update(grads, tx.init(params), params)
  return jax.tree.map(lambda u: -np.asarray(u), updates)


def test_clip_global_norm_rescales_to_clip_value():
  grads = {"a": jnp.array([300.0, 400.0]), "b": jnp.array([[0.0, 1e3]])}
  norm = float(np.sqrt(300.0**2 + 400.0**2 + 1e6))
  out = apply(sgd_cfg(clip="global_norm", clip_value=2.0), grads)
  assert float(np.sqrt(sum(np.sum(x**2) for x in out.values()))) == pytest.approx(2.0, rel=1e-5)
  for k in grads:  # the direction is kept
    np.testing.assert_allclose(out[k], np.asarray(grads[k]) * 2.0 / norm, rtol=1e-5)
  small = {"a": jnp.array([0.3, 0.4])}
  np.testing.assert_allclose(apply(sgd_cfg(clip="global_norm", clip_value=2.0), small)["a"],
                             [0.3, 0.4], rtol=1e-6)


def test_clip_value_clips_elementwise():
  grads = {"a": jnp.array([5.0, -0.5, -7.0, 0.25])}
  out = apply(sgd_cfg(clip="value", clip_value=1.0), grads)
  np.testing.assert_allclose(out["a"], [1.0, -0.5, -1.0, 0.25])


def test_clip_none_passes_gradients_through():
  grads = {"a": jnp.array([300.0, -400.0])}
  np.testing.assert_allclose(apply(sgd_cfg(clip="none"), grads)["a"], [300.0, -400.0])


@pytest.mark.parametrize("key,value,choices", [
    ("optimizer", "rmsprop", "adam, adamw, sgd"),
    ("schedule", "linear", "constant, cosine, warmup_cosine"),
    ("clip", "norm", "none, global_norm, value"),
])
def test_unknown_choice_lists_valid_ones(key, value, choices):
  with pytest.raises(ValueError, match=f"{key} '{value}'; valid choices: {choices}"):
    optim.optimizer(sgd_cfg(**{key: value}))


def test_clip_value_must_be_positive():
  with pytest.raises(ValueError, match="clip_value"):
    optim.optimizer(sgd_cfg(clip="global_norm", clip_value=0.0))


@pytest.mark.parametrize("kind", optim.OPTIMIZERS)
def test_every_optimizer_builds_and_steps(kind):
  out = apply(sgd_cfg(optimizer=kind, clip="none"), {"a": jnp.array([1.0, -2.0])})
  assert np.all(np.isfinite(out["a"])) and np.all(np.sign(out["a"]) == [1, -1])


# ----------------------------------------------------------------------------- diagnostics


def init(task: str = "adding", length: int = 30, **model):
  config = default.base(task)
  config.task.length = length
  config.task.eval_size = 8
  config.train.batch_size = 8
  config.model.cell = "rnn"
  config.model.hidden_size = 16
  config.model.update(model)
  task_, graphdef, state, _ = train.init_state(config)
  return task_, graphdef, state


def flow(**model) -> np.ndarray:
  task, graphdef, state = init(**model)
  batch = task.train_batch(0)
  return np.asarray(jax.jit(lambda p, r, b: diagnostics.gradient_flow(
      graphdef, p, r, b, task.loss))(state["params"], state["rest"], batch))


def test_gradient_flow_shape_and_finite():
  norms = flow(num_layers=2, length=12)
  assert norms.shape == (2, 12)
  assert np.all(np.isfinite(norms)) and np.all(norms >= 0)
  assert norms[:, -1].min() > 0  # the loss sits at the last step of `adding`


def test_gradient_flow_dies_for_tanh_and_explodes_for_relu_identity_scale_2():
  # The adding loss is read at the last step only, so ||dL/dh_1|| / ||dL/dh_T|| is the
  # gradient's growth over T - 1 steps backwards through W_h (untrained models).
  tanh = flow(activation="tanh", recurrent_init="orthogonal")[0]
  relu = flow(activation="relu", recurrent_init="identity", recurrent_scale=2.0)[0]
  assert tanh[0] / tanh[-1] < 1e-1  # measured ~1e-3: a dying gradient
  assert relu[0] / relu[-1] > 1e3   # measured ~4e8 (2^29 ~ 5e8): an exploding one


@pytest.mark.parametrize("scale", [0.5, 1.0, 2.0])
def test_spectral_norm_of_orthogonal_init_is_recurrent_scale(scale):
  _, _, state = init(recurrent_init="orthogonal", recurrent_scale=scale, num_layers=2)
  norms = diagnostics.spectral_norms(state["params"])
  assert set(norms) == {"weights/spectral_norm_layer_0", "weights/spectral_norm_layer_1"}
  for value in norms.values():
    assert value == pytest.approx(scale, rel=1e-5)


# ----------------------------------------------------------------------------- train_seeds


def seed_config(seed: int, steps: int = 6, **train_changes):
  """tiny_kalman logging every step, evaluating, saving and measuring every 2 steps (so only
  train.steps and train.seed depend on the arguments)."""
  config = tiny_kalman(seed=seed, steps=steps)
  t = config.train
  t.log_every, t.eval_every, t.checkpoint_every, t.diagnostics_every = 1, 2, 2, 2
  t.update(train_changes)
  return config


def exploding(seed: int):
  """A ReLU RNN at learning rate 100 (no clipping): measured, seeds 0, 1, 2 diverge at step
  2 (non-finite) while seed 3 stays finite to the end (its loss is huge, up to 5e7, but
  finite; `train.max_loss` is off so that only non-finite values stop a run here)."""
  config = seed_config(seed, schedule="constant", clip="none", learning_rate=100.0,
                       max_loss=float("inf"))
  m = config.model
  m.cell, m.activation, m.recurrent_init, m.recurrent_scale = "rnn", "relu", "identity", 2.0
  return config


def curves(workdir) -> dict[str, list[tuple[int, float]]]:
  return read_scalars(str(workdir))


def assert_same_run(got_dir, want_dir, rtol: float = 1e-5) -> None:
  got, want = curves(got_dir), curves(want_dir)
  for tag in ("train/loss", "eval/loss"):
    assert [s for s, _ in got[tag]] == [s for s, _ in want[tag]], tag
    np.testing.assert_allclose([v for _, v in got[tag]], [v for _, v in want[tag]], rtol=rtol)
  a, b = read_status(str(got_dir)), read_status(str(want_dir))
  assert a["state"] == b["state"] and a["step"] == b["step"]
  assert a["metrics"].keys() == b["metrics"].keys()
  for key, value in b["metrics"].items():
    assert a["metrics"][key] == pytest.approx(value, rel=rtol), key


@pytest.mark.slow  # the seed-group tests train several whole runs each
def test_train_seeds_equals_separate_runs(tmp_path):
  seeds = (0, 1, 2)
  alone = [train.train_and_evaluate(seed_config(s), str(tmp_path / f"alone{s}")) for s in seeds]
  dirs = [tmp_path / f"group{s}" for s in seeds]
  together = train.train_seeds([seed_config(s) for s in seeds], [str(d) for d in dirs])
  assert len(together) == 3
  for s, metrics, want, workdir in zip(seeds, together, alone, dirs):
    assert metrics.keys() == want.keys()
    for key in want:
      assert metrics[key] == pytest.approx(want[key], rel=1e-5), (s, key)
    assert_same_run(workdir, tmp_path / f"alone{s}")
    assert [s_ for s_, _ in curves(workdir)["train/loss"]] == [1, 2, 3, 4, 5, 6]
    # each run has its own files, of its own seed
    config = json.loads((workdir / "config.json").read_text())
    assert config["train"]["seed"] == s
    assert list(workdir.glob("events.out.tfevents.*"))
    assert sorted(int(p.name) for p in (workdir / "checkpoints").iterdir()
                  if p.name.isdigit()) == [2, 4, 6]
    assert read_status(str(workdir))["metrics"] == metrics
  assert len({m["loss"] for m in together}) == 3  # the seeds really differ


@pytest.mark.parametrize("configs,workdirs,match", [
    (lambda: [seed_config(0), seed_config(1, steps=8)], ["a", "b"], r"seed only.*train\.steps"),
    (lambda: [seed_config(0), _changed(seed_config(1), hidden_size=8)], ["a", "b"],
     r"seed only.*model\.hidden_size: 4 -> 8"),
    (lambda: [seed_config(2), seed_config(2)], ["a", "b"], r"distinct train\.seeds.*\[2, 2\]"),
    (lambda: [seed_config(0), seed_config(1)], ["a", "x/../a"], "distinct workdirs"),
    (lambda: [seed_config(0), seed_config(1)], ["a"], "one workdir per config.*2 configs and 1"),
    (lambda: [], [], "one workdir per config"),
])
def test_seed_group_errors_before_writing(tmp_path, configs, workdirs, match):
  dirs = [str(tmp_path / w) for w in workdirs]
  with pytest.raises(ValueError, match=match):
    train.train_seeds(configs(), dirs)
  assert not any(tmp_path.iterdir())


def _changed(config, **model):
  config.model.update(model)
  return config


@pytest.mark.slow
def test_one_seed_diverging_leaves_the_others_running(tmp_path):
  # Seed 3 first: see test_a_diverged_seed_does_not_shift_the_others for the other order.
  alone = tmp_path / "alone3"
  train.train_and_evaluate(exploding(3), str(alone))
  dirs = [tmp_path / "seed3", tmp_path / "seed0"]
  with pytest.raises(train.Diverged, match="seed0 diverged at step 2") as err:
    train.train_seeds([exploding(3), exploding(0)], [str(d) for d in dirs])
  assert "seed3" not in str(err.value)
  diverged = read_status(str(dirs[1]))
  assert diverged["state"] == "diverged" and diverged["step"] == 2
  assert "diverged at step 2" in diverged["message"]
  assert read_status(str(dirs[0]))["state"] == "completed"
  assert_same_run(dirs[0], alone, rtol=1e-4)


@pytest.mark.slow
def test_a_diverged_seed_does_not_shift_the_others(tmp_path):
  alone = tmp_path / "alone3"
  train.train_and_evaluate(exploding(3), str(alone))
  dirs = [tmp_path / "seed0", tmp_path / "seed3"]
  with pytest.raises(train.Diverged):
    train.train_seeds([exploding(0), exploding(3)], [str(d) for d in dirs])
  assert read_status(str(dirs[0]))["state"] == "diverged"
  assert read_status(str(dirs[1]))["state"] == "completed", read_status(str(dirs[1]))
  assert_same_run(dirs[1], alone, rtol=1e-4)


@pytest.mark.slow
def test_group_resumes_from_checkpoints_at_one_step(tmp_path):
  # constant learning rate: a run extended from 4 to 6 steps is the run of 6 steps
  configs = lambda steps: [seed_config(s, steps=steps, schedule="constant") for s in (0, 1)]
  straight = [tmp_path / f"straight{s}" for s in (0, 1)]
  train.train_seeds(configs(6), [str(d) for d in straight])
  dirs = [tmp_path / f"resumed{s}" for s in (0, 1)]
  train.train_seeds(configs(4), [str(d) for d in dirs])
  assert [read_status(str(d))["step"] for d in dirs] == [4, 4]
  train.train_seeds(configs(6), [str(d) for d in dirs])
  for got, want in zip(dirs, straight):
    assert_same_run(got, want, rtol=1e-6)
    assert len(list(got.glob("events.out.tfevents.*"))) == 2  # two runs wrote events


@pytest.mark.slow  # trains a whole run first
def test_group_at_different_checkpoint_steps_is_refused(tmp_path):
  first = tmp_path / "seed0"
  train.train_and_evaluate(seed_config(0, steps=2), str(first))
  dirs = [str(first), str(tmp_path / "seed1")]
  with pytest.raises(ValueError, match=r"checkpoints are at steps \[0, 2\]"):
    train.train_seeds([seed_config(0), seed_config(1)], dirs)
  assert sorted(p.name for p in (first / "checkpoints").iterdir() if p.name.isdigit()) == ["2"]
  assert read_status(str(first))["step"] == 2


@pytest.mark.slow  # a whole training run
def test_whole_sequence_norm_statistics_train_without_gradient_flow(tmp_path):
  # The gradient-flow probes run the model step by step, which eval_norm_stats='sequence'
  # does not allow: the run must still complete, with the other diagnostics and no grad_flow.
  config = tiny_kalman()
  config.model.norm = "layer"
  config.model.eval_norm_stats = "sequence"
  metrics = train.train_and_evaluate(config, str(tmp_path))
  assert np.isfinite(metrics["loss"])
  assert read_status(str(tmp_path))["state"] == "completed"
  tags = read_scalars(str(tmp_path))
  assert "grad/global_norm" in tags and "eval/loss" in tags
  assert not [t for t in tags if t.startswith("grad_flow/")]


# ------------------------------------------------------------------------ dropout and packing

from flax import nnx  # noqa: E402  (this section's own imports, appended)

from rnn_research.training.checkpointing import Checkpointer  # noqa: E402
from rnn_research.tasks import TASKS  # noqa: E402


def dropout_config(steps: int, **model):
  """seed_config (constant learning rate: a run extended from 4 to 6 steps is the run of 6
  steps) with a two-layer model and every kind of dropout on."""
  config = seed_config(0, steps=steps, schedule="constant")
  config.model.update(num_layers=2, dropout=0.3, recurrent_dropout=0.3,
                      recurrent_dropout_inputs=True)
  config.model.update(model)
  return config


def final_state(workdir, config):
  """The training state of `workdir`'s latest checkpoint."""
  _, _, target, _ = train.init_state(config)
  with Checkpointer(str(workdir / "checkpoints")) as ckpt:
    restored = ckpt.restore(target)
  assert restored is not None
  return restored


@pytest.mark.slow  # three whole training runs
def test_dropout_run_resumed_midway_equals_uninterrupted(tmp_path):
  straight = train.train_and_evaluate(dropout_config(6), str(tmp_path / "straight"))
  resumed_dir = tmp_path / "resumed"
  train.train_and_evaluate(dropout_config(4), str(resumed_dir))
  assert read_status(str(resumed_dir))["step"] == 4
  resumed = train.train_and_evaluate(dropout_config(6), str(resumed_dir))
  assert resumed == straight
  assert_same_run(resumed_dir, tmp_path / "straight", rtol=0)
  (step_a, a), (step_b, b) = (final_state(resumed_dir, dropout_config(6)),
                              final_state(tmp_path / "straight", dropout_config(6)))
  assert step_a == step_b == 6 and int(a["step"]) == int(b["step"]) == 6
  for x, y in zip(jax.tree.leaves(a["params"]), jax.tree.leaves(b["params"]), strict=True):
    np.testing.assert_array_equal(x, y)
  for x, y in zip(jax.tree.leaves(a["opt_state"]), jax.tree.leaves(b["opt_state"]), strict=True):
    np.testing.assert_array_equal(x, y)
  # Dropout was really on: the same run without it trains differently.
  plain = train.train_and_evaluate(
      dropout_config(6, dropout=0.0, recurrent_dropout=0.0), str(tmp_path / "plain"))
  assert plain["loss"] != straight["loss"]


def test_dropout_masks_change_with_the_step_and_the_seed():
  config = dropout_config(2)
  task, graphdef, state, optimizer = train.init_state(config)
  step = jax.jit(train.train_step_fn(graphdef, task, optimizer))
  batch, lr = task.train_batch(0), np.float32(config.train.learning_rate)
  loss = lambda s, seed: float(step(s, batch, np.uint32(seed), lr)[1]["train/loss"])
  first = loss(state, 0)
  assert loss(state, 0) == first                       # a pure function of (seed, step)
  assert loss(state, 1) != first                       # another seed, other masks
  assert loss({**state, "step": 1}, 0) != first        # another step, other masks


def packed_config(resets: bool, steps: int = 4):
  config = seed_config(0, steps=steps)
  config.task.pack = 2
  config.model.resets = resets
  return config


@pytest.mark.slow  # two whole training runs
def test_packed_episodes_train_and_resets_matter(tmp_path):
  on = train.train_and_evaluate(packed_config(True), str(tmp_path / "on"))
  off = train.train_and_evaluate(packed_config(False), str(tmp_path / "off"))
  assert all(np.isfinite(v) for v in on.values()) and all(np.isfinite(v) for v in off.values())
  first_on = curves(tmp_path / "on")["train/loss"][0]
  first_off = curves(tmp_path / "off")["train/loss"][0]
  assert first_on[0] == first_off[0] == 1
  assert np.isfinite(first_on[1]) and first_on[1] != first_off[1]
  assert on["loss"] != off["loss"]
  # With resets, the first step's loss is that of the initial model on the episodes apart
  # (batch_size * pack episodes of one row each, same data).
  config = packed_config(True)
  task, graphdef, state, _ = train.init_state(config)
  single = default.base("kalman")
  single.task.update(config.task.to_dict())
  single.task.pack = 1
  episodes = TASKS.get("kalman")(single.task, 2 * config.train.batch_size, 0).train_batch(0)
  packed = task.train_batch(0)
  np.testing.assert_array_equal(packed["x"].reshape(episodes["x"].shape), episodes["x"])
  model = nnx.merge(graphdef, state["params"], state["rest"])
  apart = float(task.loss(model(episodes["x"], episodes["mask"]), episodes))
  assert first_on[1] == pytest.approx(apart, rel=1e-5)
  together = float(task.loss(model(packed["x"], packed["mask"]), packed))  # no resets
  assert first_off[1] == pytest.approx(together, rel=1e-5)


def test_an_interrupt_outside_the_saving_handler_leaves_the_run_resumable(tmp_path, monkeypatch):
  """A KeyboardInterrupt the loop does not turn into a save (a second Ctrl-C, or one while
  the loop is being set up) propagates, and the run is `preempted`, not `failed`."""
  def interrupted(self, start):
    raise KeyboardInterrupt

  monkeypatch.setattr(train.Loop, "run", interrupted)
  with pytest.raises(KeyboardInterrupt):
    train.train_and_evaluate(tiny_kalman(), str(tmp_path))
  assert read_status(str(tmp_path))["state"] == "preempted"


def test_matmul_precision_is_in_force_while_the_run_traces(tmp_path, monkeypatch):
  """train.matmul_precision is the context every jitted function of the run is traced in
  (the train step, eval, diagnostics); a value outside the choices is refused, nothing written."""
  from rnn_research.training import loop

  seen, original = [], loop.Loop.run

  def run(self, start):
    seen.append(jax.config.jax_default_matmul_precision)
    return original(self, start)

  monkeypatch.setattr(loop.Loop, "run", run)
  config = tiny_kalman(steps=2)
  config.train.matmul_precision = "highest"
  train.train_and_evaluate(config, str(tmp_path / "a"))
  assert seen == ["highest"] and jax.config.jax_default_matmul_precision is None
  config.train.matmul_precision = "tf32"
  with pytest.raises(ValueError, match="matmul_precision 'tf32'; valid choices: default, high, "
                                       "highest"):
    train.train_and_evaluate(config, str(tmp_path / "b"))
  assert not (tmp_path / "b").exists()
