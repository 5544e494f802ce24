"""Optimizer, learning-rate schedule and gradient clipping (lecture 2.1.2) from `config.train`.

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


def schedule(cfg: Any) -> optax.Schedule:
  """The learning rate as a function of the step."""
  kind = _choice(cfg, "schedule", SCHEDULES)
  if kind == "constant":
    return optax.constant_schedule(cfg.learning_rate)
  if kind == "cosine":
    return optax.cosine_decay_schedule(cfg.learning_rate, cfg.steps)
  return optax.warmup_cosine_decay_schedule(0.0, cfg.learning_rate, cfg.warmup_steps,
                                            max(cfg.steps, cfg.warmup_steps + 1))


def optimizer(cfg: Any) -> optax.GradientTransformation:
  """Clipping (if any), then the optimizer with the schedule."""
  kind = _choice(cfg, "optimizer", OPTIMIZERS)
  clip = _choice(cfg, "clip", CLIPS)
  if clip != "none" and not cfg.clip_value > 0:
    raise ValueError(f"config.train.clip_value must be > 0 with clip={clip!r}, got "
                     f"{cfg.clip_value!r}")
  lr = schedule(cfg)
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
