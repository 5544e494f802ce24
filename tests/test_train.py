"""The trainer in-process: determinism, learning, the optimizer's clipping and choices, and the
gradient diagnostics (lecture section 2: dying vs exploding gradients)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from rnn_research import diagnostics, optim, train


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


def test_same_seed_same_metrics_other_seed_differs(tmp_path):
  first = train.train_and_evaluate(tiny_kalman(seed=0), str(tmp_path / "a"))
  again = train.train_and_evaluate(tiny_kalman(seed=0), str(tmp_path / "b"))
  other = train.train_and_evaluate(tiny_kalman(seed=1), str(tmp_path / "c"))
  assert set(first) >= {"loss", "mse", "kalman_mse", "mse_over_kalman"}
  assert all(np.isfinite(v) for v in first.values())
  assert first == again
  assert other["loss"] != first["loss"]


def test_resumed_at_the_end_reports_the_same_metrics(tmp_path):
  config = tiny_kalman()
  first = train.train_and_evaluate(config, str(tmp_path))
  assert train.train_and_evaluate(config, str(tmp_path)) == first  # nothing left to train


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
