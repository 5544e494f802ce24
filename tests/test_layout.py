"""The package's layering and size rules, read from the source (no imports run).

Layers, bottom to top: core < tasks < training < experiments < the entry points at the top of
`rnn_research/`. A module may import its own layer and the ones below, never one above.
"""
from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "rnn_research"
LAYERS = {"core": 1, "tasks": 2, "training": 3, "experiments": 4}
ENTRY = 5
MODULES = sorted(PACKAGE.rglob("*.py"))


def layer_of(module: str) -> int:
  """The layer of a dotted module name inside rnn_research (the entry layer at the top)."""
  parts = module.split(".")
  return LAYERS.get(parts[1], ENTRY) if len(parts) > 1 else ENTRY


def imported(path: pathlib.Path) -> set[str]:
  """Every module `path` imports, anywhere in the file (function-level imports too)."""
  names = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      names |= {alias.name for alias in node.names}
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      names.add(node.module)
      names |= {f"{node.module}.{alias.name}" for alias in node.names}
  return names


def name_of(path: pathlib.Path) -> str:
  parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_imports_a_higher_layer(path):
  own = layer_of(name_of(path))
  above = sorted(m for m in imported(path)
                 if m.startswith("rnn_research.") and layer_of(m) > own)
  assert not above, f"{name_of(path)} (layer {own}) imports a higher layer: {above}"


def test_the_layer_rule_can_fail():
  assert layer_of("rnn_research.training.train") > layer_of("rnn_research.core.models")
  assert layer_of("rnn_research.main") == ENTRY and layer_of("rnn_research.core") == 1


@pytest.mark.parametrize("module", ["experiments/compare.py", "experiments/compare_plot.py",
                                    "training/status.py", "training/atomic.py"])
def test_compare_and_what_it_reads_never_import_jax(module):
  """`compare` runs on a laptop over copied run directories: no jax (nor flax) in its imports."""
  names = imported(PACKAGE / module)
  assert not {n for n in names if n.split(".")[0] in ("jax", "flax", "optax", "orbax")}
  local = [n for n in names if n.startswith("rnn_research.")]
  for name in local:
    target = PACKAGE.parent / (name.replace(".", "/") + ".py")
    if target.exists():
      deps = imported(target)
      assert not {n for n in deps if n.split(".")[0] in ("jax", "flax")}, (module, name)


def test_sizes():
  """Small pieces: no source file over 300 lines, no function over 60, no class over 150."""
  too_big = []
  for path in MODULES:
    source = path.read_text()
    if source.count("\n") > 300:
      too_big.append(f"{path.name}: {source.count(chr(10))} lines")
    for node in ast.walk(ast.parse(source)):
      limit = {ast.FunctionDef: 60, ast.AsyncFunctionDef: 60, ast.ClassDef: 150}.get(type(node))
      if limit and node.end_lineno - node.lineno + 1 > limit:
        too_big.append(f"{path.name}:{node.lineno} {node.name}: "
                       f"{node.end_lineno - node.lineno + 1} lines")
  assert not too_big, too_big
