"""`status.json`: merged, validated, and always a whole JSON file on disk."""
from __future__ import annotations

import json
import os
import stat
import threading

import pytest

from rnn_research.training import status
from rnn_research.training.status import STATES, read_status, write_status


def test_missing_status_reads_empty(tmp_path):
  assert read_status(str(tmp_path)) == {}
  assert read_status(str(tmp_path / "not_made_yet")) == {}


def test_fields_merge_and_persist(tmp_path):
  workdir = str(tmp_path / "run")  # created on first write
  write_status(workdir, state="running", step=0)
  merged = write_status(workdir, step=100, train_loss=0.25, metrics={"mse": 1.5})
  expected = {"state": "running", "step": 100, "train_loss": 0.25, "metrics": {"mse": 1.5}}
  assert merged == expected
  assert read_status(workdir) == expected
  write_status(workdir, state="completed")
  assert read_status(workdir) == {**expected, "state": "completed"}
  assert os.listdir(workdir) == ["status.json"]  # no temporary files left behind


@pytest.mark.parametrize("state", STATES)
def test_every_valid_state_is_accepted(tmp_path, state):
  write_status(str(tmp_path), state=state)
  assert read_status(str(tmp_path))["state"] == state


def test_invalid_state_names_valid_ones_and_changes_nothing(tmp_path):
  write_status(str(tmp_path), state="running", step=3)
  with pytest.raises(ValueError) as info:
    write_status(str(tmp_path), state="finished", step=4)
  for valid in STATES:
    assert valid in str(info.value)
  assert "'finished'" in str(info.value)
  assert read_status(str(tmp_path)) == {"state": "running", "step": 3}


def test_unserialisable_value_leaves_old_file(tmp_path):
  write_status(str(tmp_path), step=1)
  with pytest.raises(TypeError):
    write_status(str(tmp_path), step=2, bad=object())
  assert read_status(str(tmp_path)) == {"step": 1}
  assert os.listdir(tmp_path) == ["status.json"]


def test_failed_replace_keeps_old_file_and_cleans_temp(tmp_path, monkeypatch):
  write_status(str(tmp_path), step=1)

  def broken_replace(src, dst):
    raise OSError("disk vanished")

  monkeypatch.setattr(status.os, "replace", broken_replace)
  with pytest.raises(OSError):
    write_status(str(tmp_path), step=2)
  monkeypatch.undo()
  assert read_status(str(tmp_path)) == {"step": 1}
  assert os.listdir(tmp_path) == ["status.json"]


def test_concurrent_reader_always_sees_whole_json(tmp_path):
  """A reader polling while the writer rewrites the file never sees a partial file."""
  path = tmp_path / "status.json"
  write_status(str(tmp_path), state="running", step=0, log="x" * 20000)
  stop, seen, bad = threading.Event(), [], []

  def reader():
    while not stop.is_set():
      try:
        seen.append(json.loads(path.read_text())["step"])
      except Exception as e:  # noqa: BLE001 - any failure is what we look for
        bad.append(repr(e))

  thread = threading.Thread(target=reader)
  thread.start()
  try:
    for step in range(1, 150):
      write_status(str(tmp_path), step=step, log=str(step) * 10000)
  finally:
    stop.set()
    thread.join()
  assert not bad, bad[:3]
  assert seen and seen == sorted(seen)
  assert read_status(str(tmp_path))["step"] == 149


@pytest.mark.parametrize("umask,expected", [(0o022, 0o644), (0o027, 0o640)])
def test_status_file_mode_follows_the_umask(tmp_path, umask, expected):
  """Readable by others as open() would make it (tempfile.mkstemp would give 0o600)."""
  previous = os.umask(umask)
  try:
    write_status(str(tmp_path), state="running", step=0)
    write_status(str(tmp_path), step=1)  # a rewrite keeps the mode
  finally:
    os.umask(previous)
  assert stat.S_IMODE(os.stat(status.status_path(str(tmp_path))).st_mode) == expected


# ------------------------------------------------------------------------- code and commits


def test_trained_under_appends_what_is_new(tmp_path):
  workdir = str(tmp_path)
  assert status.trained_under(workdir, "aaa", "c1") == {"code": ["aaa"], "commits": ["c1"]}
  write_status(workdir, code=["aaa"], commits=["c1"])
  assert status.trained_under(workdir, "aaa", "c1") == {"code": ["aaa"], "commits": ["c1"]}
  assert status.trained_under(workdir, "bbb", None) == {"code": ["aaa", "bbb"],
                                                        "commits": ["c1"]}
  assert status.trained_under(workdir, "aaa", "c2+dirty") == {"code": ["aaa"],
                                                              "commits": ["c1", "c2+dirty"]}


def test_a_run_records_its_code_and_commits_when_it_starts_and_resumes(tmp_path, monkeypatch):
  from rnn_research.training import provenance, train
  from tests.test_train import tiny_kalman

  def interrupted(self, start):  # status.json is written as the run starts; nothing trains
    raise KeyboardInterrupt

  monkeypatch.setattr(train.Loop, "run", interrupted)
  for (code, commit), codes, commits in (
      (("aaa", "c1"), ["aaa"], ["c1"]),
      (("bbb", "c2+dirty"), ["aaa", "bbb"], ["c1", "c2+dirty"]),  # a resume under new code
      (("bbb", None), ["aaa", "bbb"], ["c1", "c2+dirty"]),  # outside git: no commit added
      (("aaa", "c1"), ["aaa", "bbb"], ["c1", "c2+dirty"])):  # each one once
    monkeypatch.setattr(provenance, "code_fingerprint", lambda: code)
    monkeypatch.setattr(provenance, "git_commit", lambda: commit)
    with pytest.raises(KeyboardInterrupt):
      train.train_and_evaluate(tiny_kalman(), str(tmp_path))
    got = read_status(str(tmp_path))
    assert (got["state"], got["code"], got["commits"]) == ("preempted", codes, commits)
