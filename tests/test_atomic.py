"""`rnn_research.training.atomic`: whole files or none, no temporary files left, open()'s modes."""
from __future__ import annotations

import json
import os
import stat

import pytest

from rnn_research.training import atomic


def mode(path) -> int:
  return stat.S_IMODE(os.stat(path).st_mode)


def test_write_text_and_json_replace_the_file(tmp_path):
  path = tmp_path / "deeper" / "out.md"  # the directory is made
  atomic.write_text(path, "one")
  atomic.write_text(str(path), "two")
  assert path.read_text(encoding="utf-8") == "two"
  atomic.write_bytes(tmp_path / "b.bin", b"\x89PNG\x00")
  assert (tmp_path / "b.bin").read_bytes() == b"\x89PNG\x00"
  atomic.write_json(tmp_path / "a.json", {"b": 1, "a": [1.5, None]}, sort_keys=True)
  text = (tmp_path / "a.json").read_text()
  assert text == '{\n  "a": [\n    1.5,\n    null\n  ],\n  "b": 1\n}\n'
  assert sorted(os.listdir(tmp_path)) == ["a.json", "b.bin", "deeper"]
  assert os.listdir(path.parent) == ["out.md"]


def test_a_serialiser_that_raises_leaves_the_old_file(tmp_path):
  path = tmp_path / "x.json"
  atomic.write_json(path, {"step": 1})
  with pytest.raises(TypeError):
    atomic.write_json(path, {"step": 2, "bad": object()})
  assert json.loads(path.read_text()) == {"step": 1}
  assert os.listdir(tmp_path) == ["x.json"]


def test_an_interrupted_write_leaves_the_old_file_and_no_temp(tmp_path, monkeypatch):
  path = tmp_path / "x.txt"
  atomic.write_text(path, "old")

  def killed(*args):
    raise KeyboardInterrupt  # e.g. Ctrl-C between the write and the rename

  monkeypatch.setattr(os, "replace", killed)
  with pytest.raises(KeyboardInterrupt):
    atomic.write_text(path, "new" * 10000)
  monkeypatch.undo()
  assert path.read_text() == "old"
  assert os.listdir(tmp_path) == ["x.txt"]


def test_modes_are_those_open_gives(tmp_path):
  umask = os.umask(0o022)
  try:
    atomic.write_text(tmp_path / "new.txt", "x")
    assert mode(tmp_path / "new.txt") == 0o644  # 0o666 less the umask, as open(path, "w")
    os.chmod(tmp_path / "new.txt", 0o600)
    atomic.write_text(tmp_path / "new.txt", "y")
    assert mode(tmp_path / "new.txt") == 0o600  # an existing file keeps its mode
  finally:
    os.umask(umask)
