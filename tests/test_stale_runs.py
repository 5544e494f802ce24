"""Stale runs: which runs trained under other code than there is now, from their status.json."""
from __future__ import annotations

import json
from pathlib import Path

from rnn_research.experiments import stale_runs
from rnn_research.experiments.stale_runs import Trained

CODE = "c0de0f1ngerp"
OTHER = "0123456789ab"


def run(root: Path, name: str, **status) -> None:
  (root / name).mkdir(parents=True)
  (root / name / "status.json").write_text(json.dumps({"state": "completed", **status}))


def test_a_run_is_stale_unless_it_trained_under_the_code_only():
  assert not stale_runs.is_stale({"code": [CODE]}, CODE)
  assert stale_runs.is_stale({"code": [OTHER, CODE]}, CODE)  # resumed under changed code
  assert stale_runs.is_stale({"code": [OTHER]}, CODE)
  assert stale_runs.is_stale({}, CODE)  # trained before code was recorded


def test_trained_tells_the_stale_runs_of_a_directory(tmp_path):
  run(tmp_path, "a", code=[CODE], commits=["abc1234"])
  run(tmp_path, "b", code=[CODE, OTHER], commits=["abc1234", "def5678"])
  run(tmp_path, "c")  # before `code` and `commits` were recorded
  run(tmp_path, "d", code=[OTHER], commits=[])
  run(tmp_path, "a.replaced-20240101-000000", code=[OTHER], commits=["9999999"])  # moved aside
  run(tmp_path, ".hidden", code=[OTHER], commits=["9999999"])
  (tmp_path / "never_ran").mkdir()
  assert stale_runs.trained(str(tmp_path), CODE) == Trained(
      4, ("b", "c", "d"), "abc1234, def5678, unrecorded", "abc1234, def5678, unrecorded")
  assert stale_runs.trained(str(tmp_path / "absent"), CODE) == Trained(0, (), "", "")


def test_the_note_names_the_commits_and_the_stale_runs():
  fresh = stale_runs.of_statuses({"a": {"code": [CODE], "commits": ["abc1234"]}}, CODE)
  assert stale_runs.note(fresh, CODE) == "trained at: abc1234"
  mixed = stale_runs.of_statuses({"a": {"code": [CODE], "commits": ["abc1234"]},
                                  "b": {"code": [OTHER], "commits": ["1111111"]}}, CODE)
  first, second = stale_runs.note(mixed, CODE).split("\n")
  assert first == "trained at: abc1234, 1111111"
  assert second.startswith("**stale**: 1 of 2 runs trained at 1111111 under other code than "
                           f"there is now (fingerprint {CODE})")
  assert "--rerun_stale" in second
