"""Random search (Bergstra & Bengio 2012; Greff et al. 2017): members drawn from distributions.

  random_search(n=20, seed=0, space={"train.learning_rate": log_uniform(1e-4, 1e-1),
                                     "model.cell": choice(["lstm", "gru"]),
                                     "model.hidden_size": integer(16, 128)})

gives `n` override dicts, like `product` and `sweep` do, so `product(random_search(...), seeds(3))`
runs every drawn point with 3 seeds. The distributions, for u ~ U[0, 1):

  choice(values)            values[k], k uniform over the indices
  uniform(lo, hi)           lo + (hi - lo) u                       (float)
  log_uniform(lo, hi)       exp(log lo + (log hi - log lo) u)      (float; 0 < lo)
  integer(lo, hi)           uniform over lo, ..., hi (inclusive)   (int)
  integer(lo, hi, log=True) floor(exp(U[log lo, log(hi + 1))))     (int; P(k) ∝ log((k+1)/k))

Floats are rounded to `digits` significant digits (default 3) in the override itself, so the
member name (`learning_rate=0.00123`) shows the value the member trains with, and the same
sweep file gives bit-identical members on any machine (a last-bit difference of exp/log between
libms would otherwise make a finished member look changed). `digits=None` keeps full precision.
(A bound with more significant digits than `digits` can be passed by the rounding, by less than
half a unit of the last digit kept.)

Draws are sequential from `numpy.random.default_rng(seed)`: one member after another, its axes
in the order of `space`. The same file therefore gives the same members (a rerun resumes), and
a larger `n` keeps the first members (a search can be extended). A draw whose member name repeats
an earlier one's is dropped and drawn again, so names never collide.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from rnn_research.experiments.sweep_spec import Overrides, SweepError, member_names

MAX_TRIES = 100  # repeats in a row (20 x the size of a finite space) before giving up


def _number(name: str, value: Any) -> float:
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
    raise SweepError(f"{name}: bounds must be finite numbers, got {value!r}")
  return value


@dataclass(frozen=True)
class Distribution:
  """One axis of a random search; `draw(rng)` gives one Python value (never a numpy scalar)."""

  def draw(self, rng: np.random.Generator) -> Any:
    raise NotImplementedError

  def size(self) -> float:
    """How many distinct values it can give (inf for a continuous range)."""
    return math.inf


@dataclass(frozen=True)
class choice(Distribution):  # pylint: disable=invalid-name
  """A value of `values`, each equally likely."""
  values: tuple[Any, ...]

  def __init__(self, values: Sequence[Any]):
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
      raise SweepError(f"choice(values) needs a non-empty list of values, got {values!r}")
    object.__setattr__(self, "values", tuple(values))

  def draw(self, rng: np.random.Generator) -> Any:
    return self.values[int(rng.integers(len(self.values)))]

  def size(self) -> float:
    return len(set(map(repr, self.values)))


@dataclass(frozen=True)
class uniform(Distribution):  # pylint: disable=invalid-name
  """A float uniform on [lo, hi]."""
  lo: float
  hi: float

  def __post_init__(self):
    lo, hi = _number("uniform", self.lo), _number("uniform", self.hi)
    if not lo < hi:
      raise SweepError(f"uniform(lo, hi) needs lo < hi, got uniform({lo!r}, {hi!r})")

  def draw(self, rng: np.random.Generator) -> float:
    return self.lo + (self.hi - self.lo) * float(rng.random())


@dataclass(frozen=True)
class log_uniform(Distribution):  # pylint: disable=invalid-name
  """A float whose log is uniform on [log lo, log hi] (0 < lo < hi): as many draws per decade."""
  lo: float
  hi: float

  def __post_init__(self):
    lo, hi = _number("log_uniform", self.lo), _number("log_uniform", self.hi)
    if not 0 < lo < hi:
      raise SweepError(f"log_uniform(lo, hi) needs 0 < lo < hi, got log_uniform({lo!r}, {hi!r})")

  def draw(self, rng: np.random.Generator) -> float:
    a, b = math.log(self.lo), math.log(self.hi)
    return min(float(self.hi), max(float(self.lo), math.exp(a + (b - a) * float(rng.random()))))


@dataclass(frozen=True)
class integer(Distribution):  # pylint: disable=invalid-name
  """An int in lo, ..., hi (both included): uniform, or with `log` log-uniform (1 <= lo)."""
  lo: int
  hi: int
  log: bool = False

  def __post_init__(self):
    for v in (self.lo, self.hi):
      if isinstance(v, bool) or not isinstance(v, int):
        raise SweepError(f"integer(lo, hi) needs int bounds, got integer({self.lo!r}, {self.hi!r})")
    if self.lo > self.hi or (self.log and self.lo < 1):
      need = "1 <= lo <= hi with log=True" if self.log else "lo <= hi"
      raise SweepError(f"integer(lo, hi) needs {need}, got integer({self.lo!r}, {self.hi!r})")

  def draw(self, rng: np.random.Generator) -> int:
    if not self.log:
      return int(rng.integers(self.lo, self.hi + 1))
    a, b = math.log(self.lo), math.log(self.hi + 1)
    return min(self.hi, max(self.lo, math.floor(math.exp(a + (b - a) * float(rng.random())))))

  def size(self) -> float:
    return self.hi - self.lo + 1


def _round(value: Any, digits: int | None) -> Any:
  """`value` to `digits` significant digits if it is a float (exactly what `:.{digits}g` shows)."""
  if digits is None or not isinstance(value, float) or value == 0:
    return value
  return float(f"{value:.{digits}g}")


def _check(n: int, seed: int, space: Mapping[str, Distribution], digits: int | None) -> float:
  """Raises a one-line SweepError for a bad argument; returns the number of distinct members."""
  if isinstance(n, bool) or not isinstance(n, int) or n < 0:
    raise SweepError(f"random_search needs a count n >= 0, got n={n!r}")
  if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
    raise SweepError(f"random_search needs an int seed >= 0, got seed={seed!r}")
  if digits is not None and (isinstance(digits, bool) or not isinstance(digits, int)
                             or digits < 1):
    raise SweepError(f"random_search needs digits >= 1 or None, got digits={digits!r}")
  if not isinstance(space, Mapping) or not space:
    raise SweepError("random_search needs a non-empty space {key: distribution}")
  for key, dist in space.items():
    if not isinstance(key, str) or not isinstance(dist, Distribution):
      raise SweepError(f"random_search space entry {key!r}: {dist!r} is not a distribution "
                       "(choice, uniform, log_uniform or integer)")
  size = math.prod(d.size() for d in space.values())
  if n > size:
    raise SweepError(f"random_search: n={n} but the space has only {size} distinct members")
  return size


def random_search(n: int, seed: int, space: Mapping[str, Distribution],
                  digits: int | None = 3) -> list[Overrides]:
  """`n` members, each `{key: space[key].draw(rng)}` with floats rounded to `digits`
  significant digits; deterministic in `seed`, distinct member names (a repeat is redrawn)."""
  size = _check(n, seed, space, digits)
  limit = MAX_TRIES if math.isinf(size) else max(MAX_TRIES, 20 * int(size))
  rng = np.random.default_rng(seed)
  members: list[Overrides] = []
  names: set[str] = set()
  tries = 0
  while len(members) < n:
    member = {key: _round(dist.draw(rng), digits) for key, dist in space.items()}
    name = member_names([member])[0]
    if name not in names:
      names.add(name)
      members.append(member)
      tries = 0
      continue
    tries += 1
    if tries >= limit:
      raise SweepError(f"random_search: drew {limit} repeats in a row after {len(members)} "
                       f"distinct members of n={n}; widen the space or raise digits")
  return members
