"""Declaring a sweep: members as override dicts, their names, and checking them all up front.

A sweep is a config file (`configs/ablations/*.py`) with `get_config(arg)`, the base config,
and `get_sweep()`, the members: a list of `{dotted key: value}` overrides built with

  sweep("model.norm", ["none", "layer"])      [{"model.norm": "none"}, {"model.norm": "layer"}]
  seeds(3)                                    sweep("train.seed", [0, 1, 2])
  product(a, b, ...)                          every member of a merged with every one of b, ...
  zipit(a, b, ...)                            a[i] merged with b[i] (equal lengths)

and plain list concatenation (`a + b`). `product` and `zipit` also take a dict
`{key: [values]}` as shorthand for `sweep(key, values)` per key. A member's name is its
overrides, `norm=layer,seed=2` (the last part of each key, or the whole key where two keys of
the sweep share a last part); it names the member's run directory and TensorBoard run.

`load(path_with_arg)` imports the file; `with_overrides(swp, ["train.steps=20"])` applies
command-line overrides to every member (parsed as `main` parses `--config.<key>=<value>`);
`check(base, members)` applies every member to a copy of the locked base config and validates
it (unknown keys, wrong types, bad values, duplicate names), raising one `SweepError` that lists
every bad member before anything runs.
"""
from __future__ import annotations

import copy
import dataclasses
import importlib.util
import itertools
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

import ml_collections
from absl import flags
from ml_collections import config_flags

from rnn_research.training import config_path

Overrides = dict[str, Any]
_SCALARS = (bool, int, float, str)


class SweepError(ValueError):
  """A sweep declaration is wrong; the message lists every problem found."""


def sweep(key: str, values: Iterable[Any]) -> list[Overrides]:
  """One member per value of `key`."""
  return [{key: v} for v in values]


def seeds(n: int, start: int = 0) -> list[Overrides]:
  """`n` members with `train.seed` = start, ..., start + n - 1."""
  return sweep("train.seed", range(start, start + n))


Part = Sequence[Overrides] | Mapping[str, Sequence[Any]]


def _axes(parts: Sequence[Part]) -> list[list[Overrides]]:
  out = []
  for part in parts:
    if isinstance(part, Mapping):
      out += [sweep(k, v) for k, v in part.items()]
    else:
      out.append(list(part))
  return out


def _merge(members: Iterable[Overrides]) -> Overrides:
  merged: Overrides = {}
  for m in members:
    clash = sorted(set(merged) & set(m))
    if clash:
      raise SweepError(f"key(s) {clash} set twice in one member")
    merged.update(m)
  return merged


def product(*parts: Part) -> list[Overrides]:
  """The Cartesian product: each combination of one member per part, merged."""
  return [_merge(combo) for combo in itertools.product(*_axes(parts))]


def zipit(*parts: Part) -> list[Overrides]:
  """Member i of every part, merged; all parts must have the same length."""
  axes = _axes(parts)
  lengths = sorted({len(a) for a in axes})
  if len(lengths) > 1:
    raise SweepError(f"zipit needs parts of equal length, got lengths {[len(a) for a in axes]}")
  return [_merge(combo) for combo in zip(*axes)]


def _fmt(value: Any) -> str:
  if isinstance(value, bool):
    return str(value).lower()
  if isinstance(value, float):
    return f"{value:g}"
  return str(value).replace(os.sep, "_")


def member_names(members: Sequence[Overrides]) -> list[str]:
  """`key=value,...` per member, keys shortened to their last part where that is unique."""
  keys = {k for m in members for k in m}
  last = [k.rsplit(".", 1)[-1] for k in keys]
  short = {k: (k.rsplit(".", 1)[-1] if last.count(k.rsplit(".", 1)[-1]) == 1 else k)
           for k in keys}
  return [",".join(f"{short[k]}={_fmt(v)}" for k, v in m.items()) or "base" for m in members]


@dataclass(frozen=True)
class Sweep:
  """A loaded sweep file: its path (with `:arg`), base config and named members, and the
  command line's `key=value` overrides (already applied to `base`; every member's command
  line repeats them)."""
  config_arg: str
  base: ml_collections.ConfigDict
  members: list[Overrides]
  names: list[str]
  doc: str
  overrides: tuple[str, ...] = ()
  baseline: dict[str, Any] | str | None = None  # get_baseline(): overrides or a group name
  metric: tuple[str, str] | None = None  # get_metric(): (tag, "min" | "max")
  group_by: tuple[str, ...] | None = None  # get_group_by(): config keys that form the groups

  def config(self, i: int) -> ml_collections.ConfigDict:
    """The base config with member i's overrides applied (a new, locked copy)."""
    return apply(self.base, self.members[i])


def load(config_arg: str) -> Sweep:
  """Imports `path[:arg]`, calls get_config(arg) and get_sweep(), and if defined
  get_baseline() (the baseline member's overrides without its seed, or a group name) and
  get_metric() ((tag, "min" | "max")) and get_group_by() (dotted config keys whose values form
  the groups, for members that vary a nuisance such as a random learning rate) for `compare`;
  get_sweep and those three are called with `arg` when they take an argument. Checks nothing
  else yet."""
  path, _, arg = config_arg.partition(":")
  if not os.path.isfile(path):
    raise SweepError(f"no sweep file {path!r}")
  config_path.make_importable(path)  # `from configs import default` from any directory
  spec = importlib.util.spec_from_file_location(
      "sweep_" + os.path.splitext(os.path.basename(path))[0], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  for name in ("get_config", "get_sweep"):
    if not callable(getattr(module, name, None)):
      raise SweepError(f"{path} defines no {name}(); a sweep file needs get_config(arg) and "
                       "get_sweep()")
  base = module.get_config(arg or None)
  members = list(_call(module.get_sweep, arg))
  for i, m in enumerate(members):
    if not isinstance(m, Mapping):
      raise SweepError(f"{path}: get_sweep() member {i} is {m!r}, not a dict of overrides")
  members = [dict(m) for m in members]
  got = {}  # the optional get_baseline() and get_metric(), called with `arg` if they take one
  for name in ("get_baseline", "get_metric", "get_group_by"):
    fn = getattr(module, name, None)
    if callable(fn):
      got[name] = _call(fn, arg)
  baseline, metric = got.get("get_baseline"), got.get("get_metric")
  group_by = got.get("get_group_by")
  if group_by is not None and (isinstance(group_by, str) or not all(
      isinstance(k, str) for k in group_by) or not group_by):
    raise SweepError(f"{path}: get_group_by() returned {group_by!r}; valid: a non-empty list of "
                     "dotted config keys")
  if baseline is not None and not isinstance(baseline, (Mapping, str)):
    raise SweepError(f"{path}: get_baseline() returned {baseline!r}; valid: the baseline "
                     "member's overrides without its seed (a dict) or a group name (a str)")
  if metric is not None and (not isinstance(metric, (tuple, list)) or len(metric) != 2
                             or not isinstance(metric[0], str) or metric[1] not in ("min", "max")):
    raise SweepError(f"{path}: get_metric() returned {metric!r}; valid: (tag, 'min' | 'max')")
  return Sweep(config_arg, base, members, member_names(members),
               (module.__doc__ or "").strip(),
               baseline=dict(baseline) if isinstance(baseline, Mapping) else baseline,
               metric=tuple(metric) if metric is not None else None,
               group_by=tuple(group_by) if group_by is not None else None)


def _call(fn: Any, arg: str) -> Any:
  """fn(arg or None) if the sweep file's function takes an argument, else fn()."""
  return fn(arg or None) if fn.__code__.co_argcount else fn()


def _parent(config: ml_collections.ConfigDict, key: str) -> ml_collections.ConfigDict:
  """The section that holds the dotted `key`; an unknown key raises, naming the valid ones."""
  node = config
  parts = key.split(".")
  for i, part in enumerate(parts):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      where = "config." + ".".join(parts[:i]) if i else "the config"
      valid = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
      raise SweepError(f"unknown key {key!r}: {where} has no {part!r}; valid: {valid}")
    if i < len(parts) - 1:
      node = node[part]
  return node


def apply(base: ml_collections.ConfigDict, overrides: Overrides) -> ml_collections.ConfigDict:
  """A locked copy of `base` with each `dotted.key: value` set; a bad key or type raises."""
  config = copy.deepcopy(base)
  config.lock()
  for key, value in overrides.items():
    if not isinstance(value, _SCALARS):
      raise SweepError(f"{key}={value!r}: override values must be bool, int, float or str")
    node = _parent(config, key)
    leaf = key.rsplit(".", 1)[-1]
    old = node[leaf]
    if isinstance(old, ml_collections.ConfigDict):
      raise SweepError(f"{key} is a config section, not a value")
    want = type(old) if old is not None else node.get_ref(leaf).get_type()  # a placeholder's
    if want is float and isinstance(value, int) and not isinstance(value, bool):
      value = float(value)
    if type(value) is not want:
      raise SweepError(f"{key}={value!r} has type {type(value).__name__}, the config's "
                       f"{key} is {want.__name__} ({old!r})")
    node[leaf] = value
  return config


def with_overrides(swp: Sweep, texts: Sequence[str]) -> Sweep:
  """`swp` with command-line overrides `key=value` (parsed by the type of each config field,
  as `main --config.<key>=<value>` parses them) applied to every member. A key that is not in
  the config, a value of the wrong type, or a key that a member sets too raises SweepError."""
  if not texts:
    return swp
  for text in texts:
    key = text.split("=", 1)[0]
    if "=" not in text:
      raise SweepError(f"--config.{text}: write a config override as --config.<key>=<value>")
    if isinstance(_parent(swp.base, key)[key.rsplit(".", 1)[-1]], ml_collections.ConfigDict):
      raise SweepError(f"--config.{text}: {key} is a config section, not a value")
  argv = ["sweep"] + [f"--config.{t}" for t in texts]
  values = flags.FlagValues()
  try:
    config_flags.DEFINE_config_dict("config", copy.deepcopy(swp.base), flag_values=values,
                                    lock_config=True, sys_argv=argv)
    values(argv)
  except (flags.Error, ValueError, TypeError, KeyError, AttributeError) as err:
    raise SweepError(f"bad config override: {' '.join(str(err).split())}") from None
  keys = list(config_flags.get_override_values(values["config"]))
  clashes = []
  for key in keys:
    names = [n for n, m in zip(swp.names, swp.members) if key in m]
    if names:
      more = f" and {len(names) - 4} more" if len(names) > 4 else ""
      clashes.append(f"{key} is set by member(s) {', '.join(names[:4])}{more}")
  if clashes:
    raise SweepError(f"a --config.<key>=<value> override applies to every member, but "
                     f"{'; '.join(clashes)}; drop the override or that key from the sweep file")
  return dataclasses.replace(swp, base=values.config, overrides=tuple(texts))


def check(swp: Sweep, validate: Callable[[ml_collections.ConfigDict], Any]) -> None:
  """Applies and validates every member; raises one SweepError listing all that fail."""
  problems = []
  seen: dict[str, int] = {}
  for i, name in enumerate(swp.names):
    if name in seen:
      problems.append(f"member {i} ({name}): same overrides as member {seen[name]}")
      continue
    seen[name] = i
    try:
      validate(swp.config(i))
    except (ValueError, TypeError, KeyError, AttributeError) as err:
      problems.append(f"member {i} ({name}): {' '.join(str(err).split())}")
  if not swp.members:
    problems.append("get_sweep() returned no members")
  if problems:
    raise SweepError(f"{swp.config_arg}: {len(problems)} of {len(swp.members)} member(s) are "
                     "invalid, nothing was run:\n  " + "\n  ".join(problems))
