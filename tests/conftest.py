"""What `python3 -m pytest` runs where: the fast loop's subset, the cores, the XLA flags.

Fast loop (`python3 -m pytest -m "not slow"`): the subprocess and end-to-end tests are marked
`slow` where they are written. The model property tests (`PROPERTY_MODULES`) are too many for
it: there every parametrized property keeps one parametrization fast, the one whose values the
module's fast tests have used least so far, so that its properties rotate over the cells,
engines, norms, ... they are parametrized over; the others are marked `slow` here. A test that
marks some of its own parametrizations `slow` (`pytest.param(..., marks=pytest.mark.slow)`)
chose its fast subset itself and is left as it is. The whole suite runs everything.

Cores: with pytest-xdist installed (requirements-test.txt), a run that names no test files
spreads the test files over up to 4 worker processes, one a core (`-n 0` runs in-process).

XLA: tests compile thousands of tiny programs and run each a few times, so compiling is most of
their time. XLA_FLAGS turns LLVM's optimizations down (the same HLO, less optimised machine
code; XLA_FLAGS that already set `xla_backend_optimization_level` are left as they are), and
every compiled program is kept in JAX's persistent compilation cache under
`.pytest_cache/jax-compilation/` (at most 256 MiB, least recently used first out; cleared with
the rest of pytest's cache by `--cache-clear`). Its key is the program's HLO with the compiler's
version and flags, so an edited model compiles afresh and an unchanged one loads. Measured on 2
cores (`-m "not slow"`, 487 tests): 112 s from an empty cache, 50 s from a full one. Variables
already set in the environment win; the processes tests start inherit them.
"""
from __future__ import annotations

import collections
import os
import pathlib

import pytest

FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  # before jax starts (tests import it later)
  os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {FAST_COMPILE}".strip()
COMPILATION_CACHE = {
    "JAX_COMPILATION_CACHE_DIR": str(pathlib.Path(__file__).parents[1] / ".pytest_cache"
                                     / "jax-compilation"),
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",  # the tiny programs too
}
for name, value in COMPILATION_CACHE.items():
  os.environ.setdefault(name, value)

PROPERTY_MODULES = ("test_batch_per_step", "test_bidirectional", "test_cells", "test_dropout",
                    "test_engine", "test_interop", "test_learned_init", "test_lstm_variants",
                    "test_min_cells", "test_models", "test_norms", "test_resets", "test_skips",
                    "test_layer_per_step", "test_lstm_projection", "test_lru",
                    "test_tasks")
MAX_WORKERS = 4  # each worker holds its own compiled programs


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config):
  """`-n auto --dist loadfile` when pytest-xdist is installed, no `-n` was given and no test
  paths: each file on one worker, so a module's fixtures and cached compiles are made once."""
  option = config.option
  if (getattr(option, "numprocesses", 0) is not None or option.collectonly or option.usepdb
      or config.args_source != pytest.Config.ArgsSource.TESTPATHS
      or hasattr(config, "workerinput") or "PYTEST_XDIST_WORKER" in os.environ):
    return
  workers = min(config.hook.pytest_xdist_auto_num_workers(config=config), MAX_WORKERS)
  if workers > 1:
    option.numprocesses = workers
    if option.dist == "no":
      option.dist = "loadfile"


def _values(item) -> collections.Counter:
  def key(value):  # values without a stable repr are never the same twice
    text = repr(value)
    return f"<{id(value)}>" if " at 0x" in text else text
  return collections.Counter((name, key(v)) for name, v in item.callspec.params.items())


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects
def pytest_collection_modifyitems(config, items):
  modules: dict[object, dict[tuple, list]] = collections.defaultdict(dict)
  for item in items:
    if getattr(item, "callspec", None) is not None and item.path.stem in PROPERTY_MODULES:
      modules[item.path].setdefault((item.cls, item.originalname), []).append(item)
  for tests in modules.values():
    used = collections.Counter()
    for parametrizations in tests.values():
      if any(item.get_closest_marker("slow") for item in parametrizations):
        continue
      fast = min(parametrizations, key=lambda item: sum(used[v] for v in _values(item)))
      used.update(_values(fast))
      for item in parametrizations:
        if item is not fast:
          item.add_marker(pytest.mark.slow)
