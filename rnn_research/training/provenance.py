"""What code a run trains under: a fingerprint of the packages that compute it, and the commit.

`code_fingerprint()` hashes every .py file of rnn_research/core, tasks and training: the
models, the problems and their data, and the trainer. Together they define what a run
computes, so a result is comparable to a new run only while the fingerprint is the same.
experiments/ (sweeps, compare, the report) and the entry points at the top of rnn_research/
only launch runs and read their files: changing them changes no number a run writes, and
leaving them out keeps the report's own edits from making every run stale. For the same reason
the read-side tools that live in training/ (`READ_ONLY`: sampling, rollouts, their plots and
loader, the heatmap image) are left out.

`git_commit()` names the checkout, for people; the fingerprint, not the commit, decides
staleness (an uncommitted edit changes the fingerprint but not HEAD). The trainer records
both in status.json (`status.trained_under`). No jax here.
"""
from __future__ import annotations

import hashlib
import pathlib
import subprocess

PACKAGE = pathlib.Path(__file__).resolve().parents[1]  # rnn_research/
FINGERPRINTED = ("core", "tasks", "training")
READ_ONLY = ("training/heatmap.py", "training/rollout.py", "training/rollout_plot.py",
             "training/run_loader.py", "training/sampling.py")


def code_fingerprint(package: pathlib.Path = PACKAGE) -> str:
  """12 hex digits of sha256 over the relative path and contents of every .py file under
  `package`/core, tasks and training but READ_ONLY, in the order of their relative paths."""
  files = sorted((p.relative_to(package).as_posix(), p) for name in FINGERPRINTED
                 for p in (package / name).rglob("*.py")
                 if p.relative_to(package).as_posix() not in READ_ONLY)
  digest = hashlib.sha256()
  for rel, path in files:
    digest.update(rel.encode() + b"\0" + path.read_bytes() + b"\0")
  return digest.hexdigest()[:12]


def _git(package: pathlib.Path, *args: str) -> str | None:
  try:
    proc = subprocess.run(["git", "-C", str(package), *args], capture_output=True, text=True,
                          timeout=30, check=False)
  except (OSError, subprocess.SubprocessError):
    return None
  return proc.stdout.strip() if proc.returncode == 0 else None


def git_commit(package: pathlib.Path = PACKAGE) -> str | None:
  """The short HEAD of the checkout holding `package`, with "+dirty" when a tracked file under
  its fingerprinted packages differs from HEAD; None outside a git checkout. Never raises."""
  head = _git(package, "rev-parse", "--short", "HEAD")
  if not head:
    return None
  dirty = _git(package, "status", "--porcelain", "--untracked-files=no", "--",
               *FINGERPRINTED)
  return head + ("+dirty" if dirty else "")
