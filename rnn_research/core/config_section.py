"""Checking one config section (`model`, `task`, `train`) against its defaults.

Every error is one `ValueError` that names the key and what would be valid.
"""
from __future__ import annotations

import numbers
from typing import Any, Mapping

import ml_collections
import numpy as np


def resolve(given: Mapping[str, Any] | ml_collections.ConfigDict,
            defaults: ml_collections.ConfigDict, section: str) -> ml_collections.FrozenConfigDict:
  """`defaults` overlaid with `given`; unknown keys and values of the wrong type raise."""
  given = given.to_dict() if isinstance(given, ml_collections.ConfigDict) else dict(given)
  valid = sorted(defaults.keys())
  unknown = sorted(set(given) - set(valid))
  if unknown:
    owner = f" for {section} {defaults.name!r}" if "name" in defaults else ""
    raise ValueError(f"unknown config.{section} key(s) {unknown}{owner}; valid keys: {valid}")
  merged = defaults.to_dict()
  for key, value in given.items():
    merged[key] = _typed(f"config.{section}.{key}", value, merged[key])
  return ml_collections.FrozenConfigDict(merged)


def _typed(path: str, value: Any, default: Any) -> Any:
  """`value` converted to the type of `default`, or ValueError naming the expected type."""
  if isinstance(default, bool):
    ok, kind, cast = isinstance(value, (bool, np.bool_)), "a bool (True/False)", bool
  elif isinstance(default, int):
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    kind, cast = "an integer", int
  elif isinstance(default, float):
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    kind, cast = "a number", float
  else:
    ok, kind, cast = isinstance(value, str), "a string", str
  if not ok:
    raise ValueError(f"{path} must be {kind}, got {value!r}")
  return cast(value)


def check_range(cfg: Mapping[str, Any], key: str, low: float | None = None,
                high: float | None = None, *, low_open: bool = False,
                section: str = "task") -> None:
  """ValueError naming the valid range unless low <= cfg[key] <= high (low < ... if low_open)."""
  value = cfg[key]
  too_low = low is not None and (value <= low if low_open else value < low)
  if too_low or (high is not None and value > high):
    lo = "-inf" if low is None else low
    hi = "inf" if high is None else high
    bracket = "(" if low_open else "["
    raise ValueError(f"config.{section}.{key}={value!r} is out of range; valid range: "
                     f"{bracket}{lo}, {hi}]")
