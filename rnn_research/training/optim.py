"""Optimizer, learning-rate schedule and gradient clipping (lecture 2.1.2) from `config.train`.

The schedule's peak (`config.train.learning_rate`) may be passed as `peak`, a traced scalar:
the trainer's step takes it as an input, so that runs differing only in their learning rate
(a random search) compile one program.

  clip='global_norm': g <- g * min(1, clip_value / ||g||_2)   (Pascanu et al. 2013)
  clip='value':       g <- clip(g, -clip_value, clip_value)   (element-wise)
"""
from __future__ import annotations

from typing import Any

import optax

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "warmup_cosine")
CLIPS = ("none", "global_norm", "value")


def _choice(cfg: Any, key: str, valid: tuple[str, ...]) -> str:
  value = cfg[key]
  if value not in valid:
    raise ValueError(f"unknown config.train.{key} {value!r}; valid choices: {', '.join(valid)}")
  return value


def schedule(cfg: Any, peak: Any = None) -> optax.Schedule:
  """The learning rate as a function of the step, peaking at `peak` (default
  cfg.learning_rate)."""
  kind = _choice(cfg, "schedule", SCHEDULES)
  peak = cfg.learning_rate if peak is None else peak
  if kind == "constant":
    return optax.constant_schedule(peak)
  if kind == "cosine":
    return optax.cosine_decay_schedule(peak, cfg.steps)
  # optax.warmup_cosine_decay_schedule(0.0, peak, warmup, steps), built from its parts as it
  # builds it (end value 0, so alpha 0): it branches in Python on the peak, which may be traced.
  decay_steps = max(cfg.steps, cfg.warmup_steps + 1)
  return optax.join_schedules(
      [optax.linear_schedule(0.0, peak, cfg.warmup_steps),
       optax.cosine_decay_schedule(peak, decay_steps - cfg.warmup_steps, alpha=0.0)],
      [cfg.warmup_steps])


def optimizer(cfg: Any, peak: Any = None) -> optax.GradientTransformation:
  """Clipping (if any), then the optimizer with the schedule (peaking at `peak`)."""
  kind = _choice(cfg, "optimizer", OPTIMIZERS)
  clip = _choice(cfg, "clip", CLIPS)
  if clip != "none" and not cfg.clip_value > 0:
    raise ValueError(f"config.train.clip_value must be > 0 with clip={clip!r}, got "
                     f"{cfg.clip_value!r}")
  lr = schedule(cfg, peak)
  if kind == "adam":
    opt = optax.adam(lr)
  elif kind == "adamw":
    opt = optax.adamw(lr, weight_decay=cfg.weight_decay)
  else:
    opt = optax.sgd(lr, momentum=cfg.momentum or None)
  if clip == "global_norm":
    return optax.chain(optax.clip_by_global_norm(cfg.clip_value), opt)
  if clip == "value":
    return optax.chain(optax.clip(cfg.clip_value), opt)
  return opt
