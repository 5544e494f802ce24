"""Config files load from any directory.

A config file in a package (`configs/tasks/kalman.py` imports `from configs import default`)
needs the directory that holds its top-level package on `sys.path`; `make_importable` puts it
there, so `--config=/path/to/repo/configs/tasks/kalman.py` works from anywhere.
"""
import os
import sys


def package_root(path: str) -> str:
  """The directory that holds the top-level package `path` is in (its own directory if it
  is in no package): walks up while the directory has an `__init__.py`."""
  directory = os.path.dirname(os.path.abspath(path))
  while os.path.isfile(os.path.join(directory, "__init__.py")):
    parent = os.path.dirname(directory)
    if parent == directory:
      break
    directory = parent
  return directory


def make_importable(path: str) -> None:
  """Puts `package_root(path)` first on `sys.path` (once)."""
  root = package_root(path)
  if root not in sys.path:
    sys.path.insert(0, root)
