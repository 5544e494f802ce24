"""Command-line plumbing shared by the entry points."""
import sys

from absl import flags


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
