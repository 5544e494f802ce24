"""Command-line plumbing shared by the entry points.

`parse_flags` is absl's parsing with every bad flag, override or config file reported as one
line (`bad input: ...`) and exit code 2. `define_config_flag` defines `--config=file.py[:arg]`
(ml_collections' config file flag) so that a config file loads from any directory: the
directory that holds its top-level package (e.g. the repository, for `configs/tasks/x.py`)
is put on `sys.path` first, so `from configs import default` works.
"""
import os
import sys
import traceback
from typing import Any

import ml_collections
from absl import flags
from ml_collections import config_flags

from rnn_research.training import config_path


class ConfigFileError(Exception):
  """A config file that is missing, fails to load or returns no ConfigDict (one line)."""


def _innermost(err: BaseException) -> BaseException:
  while (err.__cause__ or err.__context__) is not None:
    err = err.__cause__ or err.__context__
  return err


def _failure(file: str, err: BaseException) -> ConfigFileError:
  """`config file F:LINE raised Type: message`, the line being the file's deepest frame."""
  err = _innermost(err)
  lines = [f.lineno for f in traceback.extract_tb(err.__traceback__)
           if os.path.abspath(f.filename) == os.path.abspath(file)]
  where = f"{file}:{lines[-1]}" if lines else file
  message = " ".join(str(err).split())
  return ConfigFileError(f"config file {where} raised {type(err).__name__}"
                         + (f": {message}" if message else ""))


class ConfigFileParser(flags.ArgumentParser):
  """Wraps ml_collections' parser of `file.py[:arg]` with the checks and one-line errors above."""

  def __init__(self, inner: flags.ArgumentParser) -> None:
    self.inner = inner

  def flag_type(self) -> str:
    return self.inner.flag_type()

  def parse(self, path: Any) -> Any:
    if not isinstance(path, str):
      return self.inner.parse(path)
    file = path.split(":", 1)[0]
    if not os.path.isfile(file):
      problem = "is a directory" if os.path.isdir(file) else "does not exist"
      raise ConfigFileError(f"config file {file} {problem} (relative paths start at "
                            f"{os.getcwd()})")
    config_path.make_importable(file)  # `from configs import default` from any directory
    try:
      config = self.inner.parse(path)
    except Exception as err:  # noqa: BLE001 - whatever the file raised, reported in one line
      raise _failure(file, err) from None
    if isinstance(config, ml_collections.ConfigDict):
      return config
    error = getattr(config, "_error", None)  # ml_collections defers an IOError this way
    if isinstance(error, BaseException):
      raise _failure(file, error)
    raise ConfigFileError(f"config file {file}: get_config() returned a "
                          f"{type(config).__name__}, not an ml_collections.ConfigDict (build "
                          "it with for_task() or base() of rnn_research.training."
                          "config_defaults, or wrap it in ml_collections.ConfigDict(...))")


def define_config_flag(name: str, help_string: str) -> flags.FlagHolder:
  """`--<name>=file.py[:arg]`, locked, parsed by `ConfigFileParser`."""
  holder = config_flags.DEFINE_config_file(name, None, help_string, lock_config=True)
  flag = flags.FLAGS[name]
  flag.parser = ConfigFileParser(flag.parser)
  return holder


def parse_flags(argv: list[str]) -> list[str]:
  """absl's parsing, but a bad flag or config override is one line and exit code 2."""
  try:
    return flags.FLAGS(argv)
  except Exception as err:  # flags.Error, and ml_collections' override errors
    message = " ".join(str(err).split()) or type(err).__name__
    if isinstance(err, (AttributeError, KeyError)):  # a locked config refused a key
      key = message.strip("\"'")
      given = [a for a in argv if a.startswith("--config.") and f".{key}" in a.split("=")[0]]
      message = (f"unknown config key {key!r} in {' '.join(given) or 'an override'}; the "
                 "valid keys are those of the config file (see configs/default.py)")
    print(f"bad input: {message}", file=sys.stderr)
    sys.exit(2)
