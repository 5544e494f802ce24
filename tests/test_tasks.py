"""The task contract, checked for every registered task: batch keys, shapes and dtypes,
determinism in (seed, step), a fixed held-out set, masking, a jittable loss, `evaluate`'s keys,
and config validation (unknown keys, bad values)."""
from __future__ import annotations

import math

import jax
import numpy as np
import pytest

from rnn_research import tasks
from rnn_research.tasks import TASKS

B = 8
NAMES = TASKS.names()
# The metrics each task documents (beside `loss`).
METRICS = {
    "kalman": {"mse", "kalman_mse", "mse_over_kalman", "fixed_gain_mse", "fixed_gain_over_kalman",
               "rts_mse", "rts_over_kalman", "mse_over_kalman_start", "mse_over_kalman_steady"},
    "pendulum": {"mse", "ekf_mse", "mse_over_ekf", "pf_mse", "mse_over_pf", "ekf_over_pf"},
    "temperature": {"mse", "persistence_mse", "mse_over_persistence"},
    "charlm": {"xent", "accuracy", "bpc", "unigram_bpc", "bpc_over_unigram"},
    "copy": {"xent", "accuracy", "chance_xent", "chance_accuracy"},
    "adding": {"mse", "chance_mse", "mse_over_chance"},
    "multiscale": {"xent", "accuracy", "chance_accuracy", "chance_xent", "oracle_accuracy",
                   "oracle_xent"},
    "vowels": {"xent", "accuracy", "chance_accuracy", "chance_xent"},
}
# One out-of-range value per task: (key, value, text the error must contain).
BAD_VALUES = {
    "kalman": ("radius", 1.5, "valid range"),
    "pendulum": ("dt", 0.0, "valid range"),
    "temperature": ("train_fraction", 1.5, "valid range"),
    "charlm": ("holdout_every", 1, "valid range"),
    "copy": ("num_symbols", 1, "valid range"),
    "adding": ("length", 1, "valid range"),
    "multiscale": ("num_regimes", 1, "valid range"),
    "vowels": ("standardize", "yes", "must be a bool"),
}


@pytest.fixture(scope="module", params=NAMES)
def task(request) -> tasks.Task:
  return TASKS.get(request.param)({"name": request.param}, B, 0)


def test_every_task_is_listed():
  assert set(NAMES) == set(METRICS) == set(BAD_VALUES)


def _check_batch(task, batch, length=None):
  assert set(batch) == {"x", "y", "mask", "weight"}
  x, y, mask, weight = batch["x"], batch["y"], batch["mask"], batch["weight"]
  assert x.dtype == np.float32 and x.ndim == 3 and x.shape[0] == B
  assert x.shape[2] == task.in_features
  b, t = x.shape[:2]
  if isinstance(task, tasks.ClassificationTask):
    assert y.dtype == np.int32 and y.shape == (b, t)
    assert y.min() >= 0 and y.max() < task.out_features
  else:
    assert y.dtype == np.float32 and y.shape == (b, t, task.out_features)
  assert mask.dtype == np.bool_ and mask.shape == (b, t)
  assert weight.dtype == np.float32 and weight.shape == (b, t)
  assert np.all(weight[~mask] == 0) and np.all(weight >= 0)
  assert np.all(np.isfinite(x)) and np.all(np.isfinite(y))


def test_train_batch_contract(task):
  batch = task.train_batch(0)
  _check_batch(task, batch)
  assert batch["weight"].sum() > 0
  assert task.causal is True


def test_train_batch_is_a_function_of_seed_and_step(task):
  first = task.train_batch(5)
  task.train_batch(3)
  again = task.train_batch(5)
  fresh = TASKS.get(task.name)({"name": task.name}, B, 0).train_batch(5)
  for key in first:
    np.testing.assert_array_equal(first[key], again[key])
    np.testing.assert_array_equal(first[key], fresh[key])
  assert not np.array_equal(first["x"], task.train_batch(6)["x"])
  other_seed = TASKS.get(task.name)({"name": task.name}, B, 1).train_batch(5)
  assert not np.array_equal(first["x"], other_seed["x"])


def test_eval_batches_are_fixed(task):
  first, second = task.eval_batches(), task.eval_batches()
  assert len(first) == len(second) >= 1
  for a, b in zip(first, second):
    _check_batch(task, a)
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
      assert not a[key].flags.writeable
  assert sum(float(b["weight"].sum()) for b in first) > 0


def test_loss_is_finite_and_jittable(task):
  batch = task.train_batch(0)
  ys = np.random.default_rng(0).standard_normal(batch["x"].shape[:2] + (task.out_features,))
  ys = ys.astype(np.float32)
  eager = task.loss(ys, batch)
  jitted = jax.jit(task.loss)(ys, batch)
  assert eager.shape == () and np.isfinite(float(eager))
  np.testing.assert_allclose(float(jitted), float(eager), rtol=1e-5)
  grad = jax.grad(task.loss)(ys, batch)
  assert np.all(np.isfinite(grad))


def _numpy_loss(task, ys, batch):
  """Independent per-position loss in float64 numpy: [B, T]."""
  ys = ys.astype(np.float64)
  if isinstance(task, tasks.ClassificationTask):
    logz = np.log(np.exp(ys - ys.max(-1, keepdims=True)).sum(-1)) + ys.max(-1)
    return logz - np.take_along_axis(ys, batch["y"][..., None].astype(int), -1)[..., 0]
  return ((ys - batch["y"]) ** 2).mean(-1)


def test_evaluate_returns_documented_finite_metrics(task):
  zeros = task.evaluate(lambda b: np.zeros(b["x"].shape[:2] + (task.out_features,)))
  assert set(zeros) == {"loss"} | METRICS[task.name]
  assert all(isinstance(v, float) and math.isfinite(v) for v in zeros.values())
  # The pooled loss over the padded batches equals an independent numpy computation.
  rng = np.random.default_rng(1)
  preds = []

  def predict(batch):
    preds.append((rng.standard_normal(batch["x"].shape[:2] + (task.out_features,)), batch))
    return preds[-1][0].astype(np.float32)

  got = task.evaluate(predict)["loss"]
  num = sum((_numpy_loss(task, ys.astype(np.float32), b) * b["weight"]).sum() for ys, b in preds)
  den = sum(b["weight"].sum() for _, b in preds)
  np.testing.assert_allclose(got, num / den, rtol=1e-4)


def test_evaluate_rejects_wrong_output_width(task):
  with pytest.raises(ValueError, match="expected"):
    task.evaluate(lambda b: np.zeros(b["x"].shape[:2] + (task.out_features + 1,)))


@pytest.mark.parametrize("name", NAMES)
def test_defaults_document_every_key(name):
  cls = TASKS.get(name)
  cfg = cls.defaults()
  assert cfg.name == name == cls.name
  assert len(cfg.keys()) >= 1
  keys = cls.all_keys()
  assert set(cfg.keys()) == {"name", *keys} and all(k.doc.strip() for k in keys.values())


@pytest.mark.parametrize("name", NAMES)
def test_unknown_key_lists_valid_keys(name):
  with pytest.raises(ValueError, match="valid keys") as err:
    TASKS.get(name)({"name": name, "no_such_key": 1}, B, 0)
  for key in TASKS.get(name).defaults().keys():
    assert key in str(err.value)


@pytest.mark.parametrize("name", NAMES)
def test_bad_values_name_valid_choices(name):
  key, value, text = BAD_VALUES[name]
  with pytest.raises(ValueError, match=text) as err:
    TASKS.get(name)({"name": name, key: value}, B, 0)
  assert key in str(err.value)
  # A value of the wrong type fails the same way, naming the expected type.
  typed_key = next(k for k in TASKS.get(name).defaults().keys() if k != "name")
  with pytest.raises(ValueError, match="must be"):
    TASKS.get(name)({"name": name, typed_key: "bogus"}, B, 0)


def test_build_rejects_unknown_task_and_mismatched_name():
  with pytest.raises(ValueError, match="valid choices: adding, charlm"):
    TASKS.get("kalmann")
  with pytest.raises(ValueError, match="this is task 'copy'"):
    TASKS.get("copy")({"name": "adding"}, B, 0)
  with pytest.raises(ValueError, match="batch_size"):
    TASKS.get("copy")({"name": "copy"}, 0, 0)


def test_config_dict_sections_are_accepted():
  cfg = TASKS.get("copy").defaults()
  cfg.delay = 3
  task = TASKS.get(cfg.name)(cfg, B, 0)
  assert task.cfg.delay == 3 and task.train_batch(0)["x"].shape[1] == 2 * 5 + 3 + 1


@pytest.mark.parametrize("name", NAMES)
def test_main_metric_is_a_logged_metric(name):
  """Each task names its main metric (the trainer records it in status.json for `compare`
  and puts it first in the HParams dashboard): one of the metrics it logs."""
  tag, mode = TASKS.get(name).main_metric
  assert tag.startswith("eval/") and tag[len("eval/"):] in METRICS[name] | {"loss"}
  assert mode in ("min", "max") and (mode == "max") == ("accuracy" in tag)
