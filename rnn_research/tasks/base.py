"""The task contract the trainer relies on, the `TASKS` registry and config checking.

A task is a problem of the lecture's section 5 (filtering, generation) or a probe of sections
2.2.3 and 3 (long-range dependence, multiscale context). Every task maps its config section to

  in_features, out_features          sizes the model is built with
  train_batch(step) -> batch         a pure function of (seed, step): resuming reproduces it
  eval_batches() -> [batch, ...]     a fixed held-out set, the same list on every call
  loss(ys, batch) -> scalar          jittable weighted mean: sum(w * l) / sum(w)
  evaluate(predict) -> {name: float} `loss`, the task's metrics and the baselines beside them

where a batch holds `x` float32 [B, T, F], `y` (float32 [B, T, O] or int32 [B, T] class ids),
`mask` bool [B, T] (valid positions, fed to the model) and `weight` float32 [B, T] (where the
loss counts; 0 wherever mask is 0), and with `pack` > 1 `resets` bool [B, T] (where a packed
episode starts, fed to the model). Eval batches all have B = batch_size (the last one padded
with rows whose mask and weight are 0), so a jitted `predict` compiles once.

A subclass states its own config keys in `config_keys` (each a `Key`: default, meaning, valid
range; `held_out` adds `eval_size`/`eval_seed` for a generated held-out set), and implements
`setup()` (sizes and data from `self.cfg`, ending with `_set_eval(data)` or
`_set_generated_eval()`), `sample(rng, n)` (n training examples) and `metrics`. A task with a
long-stream form for truncated BPTT (`Streams` in tasks/streams.py) adds the key `stream_length`,
`sample_stream(rng, n)` and so `stream_window(step, K)`. Tasks are numpy/jax only: they never
import the model.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Mapping

import jax
import ml_collections
import numpy as np

from rnn_research.core import config_section
from rnn_research.core.config_section import check_range
from rnn_research.core.registry import Registry
from rnn_research.tasks import batching, losses

Batch = dict[str, np.ndarray]
TASKS: Registry[type["Task"]] = Registry("task")


def resolve_config(cfg: Mapping[str, Any] | ml_collections.ConfigDict,
                   defaults: ml_collections.ConfigDict) -> ml_collections.FrozenConfigDict:
  """`defaults` overlaid with `cfg`; unknown keys, a wrong `name` or wrong types raise."""
  given = cfg.to_dict() if isinstance(cfg, ml_collections.ConfigDict) else dict(cfg)
  if given.get("name", defaults.name) != defaults.name:
    raise ValueError(f"config.task.name is {given['name']!r}, but this is task {defaults.name!r}")
  return config_section.resolve(given, defaults, "task")


@dataclass(frozen=True)
class Key:
  """One key of a task's config section: its default (which fixes its type), what it means,
  and its valid range low <= value <= high (low < value if low_open; None: unbounded)."""
  default: bool | int | float | str
  doc: str
  low: float | None = None
  high: float | None = None
  low_open: bool = False


def _common_keys(held_out: int | None) -> dict[str, Key]:
  """The keys every task has, and with `held_out` those of a generated held-out set."""
  keys = {"pack": Key(1, "Episodes per training row, end to end, with `resets` marking where "
                         "each starts (config.model.resets decides whether the model honours "
                         "them); eval stays one per row.", low=1)}
  if held_out is not None:
    keys["eval_size"] = Key(held_out, "Number of held-out sequences.", low=1)
    keys["eval_seed"] = Key(0, "Seed of the held-out sequences (a stream apart from the "
                               "training data's).", low=0)
  return keys


class Task:
  """Base of every task; see the module docstring for the contract.

  Attributes:
    cfg: the resolved, frozen task config section.
    batch_size: B of training and eval batches.
    seed: the trainer's seed; training data is a function of (seed, step).
    in_features: F, the model's input width.
    out_features: O, the model's output width (classes for classification).
    causal: the target at t depends on inputs up to t only (filtering / generation).
    main_metric: (TensorBoard tag, "min" or "max"): the metric that ranks runs of this task
      and whether lower or higher is better. The trainer records it in status.json (`compare`
      defaults to it) and lists it first in the HParams dashboard.
  """

  name: ClassVar[str] = ""
  causal: ClassVar[bool] = True
  main_metric: ClassVar[tuple[str, str]] = ("eval/loss", "min")
  held_out: ClassVar[int | None] = None  # default eval_size of a generated held-out set
  config_keys: ClassVar[dict[str, Key]] = {}  # the task's own keys, beside name and pack
  in_features: int
  out_features: int

  @classmethod
  def all_keys(cls) -> dict[str, Key]:
    """Every key of the config section but `name`: the common ones, then the task's own."""
    return {**_common_keys(cls.held_out), **cls.config_keys}

  @classmethod
  def defaults(cls) -> ml_collections.ConfigDict:
    """The task's config section, `name` (its name in TASKS) included."""
    c = ml_collections.ConfigDict({"name": cls.name})
    for key, spec in cls.all_keys().items():
      c[key] = spec.default
    return c

  def _set_generated_eval(self) -> None:
    """Draws the held-out set (`eval_size` sequences of seed `eval_seed`) with `sample`."""
    self._set_eval(self.sample(batching.eval_rng(self.cfg.eval_seed), self.cfg.eval_size))

  def __init__(self, cfg: Mapping[str, Any] | ml_collections.ConfigDict, batch_size: int,
               seed: int):
    for key, value in (("batch_size", batch_size), ("seed", seed)):
      if not isinstance(value, numbers.Integral) or value < (1 if key == "batch_size" else 0):
        raise ValueError(f"{key} must be an integer >= {1 if key == 'batch_size' else 0}, "
                         f"got {value!r}")
    self.cfg = resolve_config(cfg, self.defaults())
    for key, spec in self.all_keys().items():
      if spec.low is not None or spec.high is not None:
        check_range(self.cfg, key, spec.low, spec.high, low_open=spec.low_open)
    self.batch_size = int(batch_size)
    self.seed = int(seed)
    self._eval: Batch = {}
    self._eval_batches: list[Batch] = []
    self.setup()

  def setup(self) -> None:
    """Sets in_features, out_features, the task's data and its held-out set from self.cfg
    (its keys are resolved and within their ranges)."""
    raise NotImplementedError

  def sample(self, rng: np.random.Generator, n: int) -> Batch:
    """n training examples drawn with `rng` (full arrays, keys x, y, mask, weight)."""
    raise NotImplementedError

  def train_batch(self, step: int) -> Batch:
    """The training batch of `step`: the same (seed, step) always gives the same arrays."""
    if not isinstance(step, numbers.Integral) or step < 0:
      raise ValueError(f"step must be an integer >= 0, got {step!r}")
    rng, pack = batching.train_rng(self.seed, int(step)), self.cfg.pack
    if pack == 1:
      return self.sample(rng, self.batch_size)
    return batching.pack(self.sample(rng, self.batch_size * pack), pack)

  def _set_eval(self, data: Batch) -> None:
    """Stores the held-out set (unpadded) and its read-only, padded batches."""
    self._eval = batching.freeze(data)
    self._eval_batches = batching.split_batches(data, self.batch_size)

  def eval_batches(self) -> list[Batch]:
    """The fixed held-out set in batches of `batch_size` (read-only arrays)."""
    return list(self._eval_batches)

  @property
  def eval_size(self) -> int:
    """Number of held-out sequences (before padding)."""
    return len(self._eval["x"])

  def loss(self, ys: jax.Array, batch: Mapping[str, Any]) -> jax.Array:
    """Scalar training loss of model outputs ys [B, T, O] (jittable)."""
    raise NotImplementedError

  def metrics(self, ys: np.ndarray, data: Batch) -> dict[str, Any]:
    """Metrics of outputs ys on the whole (unpadded) held-out set `data`."""
    return {"loss": self.loss(ys, data)}

  def evaluate(self, predict: Callable[[Batch], np.ndarray]) -> dict[str, float]:
    """Runs `predict` on every eval batch; metrics pooled over the held-out set."""
    outs = [np.asarray(predict(batch), np.float32) for batch in self._eval_batches]
    ys = np.concatenate(outs)[:self.eval_size]
    expected = self._eval["x"].shape[:2] + (self.out_features,)
    if ys.shape != expected:
      raise ValueError(f"predict returned shape {ys.shape[1:]} per example, expected "
                       f"{expected[1:]}")
    return {k: float(v) for k, v in self.metrics(ys, self._eval).items()}


class RegressionTask(Task):
  """Targets float32 [B, T, O]; loss = weighted MSE (mean over the O outputs)."""

  def loss(self, ys: jax.Array, batch: Mapping[str, Any]) -> jax.Array:
    return losses.weighted_mse(ys, batch["y"], batch["weight"])

  def metrics(self, ys: np.ndarray, data: Batch) -> dict[str, Any]:
    mse = self.loss(ys, data)
    return {"loss": mse, "mse": mse}

  @staticmethod
  def compare(m: dict[str, Any], baseline: str, baseline_ys: np.ndarray,
              data: Batch) -> dict[str, Any]:
    """Adds `<baseline>_mse` and `mse_over_<baseline>` (1.0: as good as the baseline)."""
    b = losses.weighted_mse(baseline_ys, data["y"], data["weight"])
    return {**m, f"{baseline}_mse": b, f"mse_over_{baseline}": m["mse"] / b}


class ClassificationTask(Task):
  """Targets int32 class ids [B, T]; outputs are logits; loss = weighted cross-entropy (nats)."""

  def loss(self, ys: jax.Array, batch: Mapping[str, Any]) -> jax.Array:
    return losses.weighted_xent(ys, batch["y"], batch["weight"])

  def metrics(self, ys: np.ndarray, data: Batch) -> dict[str, Any]:
    xent = self.loss(ys, data)
    acc = losses.weighted_accuracy(ys, data["y"], data["weight"])
    return {"loss": xent, "xent": xent, "accuracy": acc}
