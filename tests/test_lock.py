"""`training/lock.py`: one writer per workdir, against real processes (no mocks)."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from rnn_research.training import lock

ROOT = Path(__file__).resolve().parents[1]
HOLDER = ("import sys, time\n"
          "from rnn_research.training import lock\n"
          "lock.acquire(sys.argv[1])\n"
          "print('held', flush=True)\n"
          "time.sleep(120)\n")


def start_holder(workdir: Path) -> subprocess.Popen:
  """A separate process that takes `workdir`'s lock and sleeps; returns once it holds it."""
  env = {**os.environ, "PYTHONPATH": str(ROOT)}
  proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(workdir)], stdout=subprocess.PIPE,
                          text=True, env=env)
  assert proc.stdout.readline().strip() == "held"
  return proc


@pytest.fixture
def holder(tmp_path):
  """(workdir, process) with the lock held by another live process."""
  workdir = tmp_path / "run"
  proc = start_holder(workdir)
  yield workdir, proc
  proc.kill()
  proc.wait()


def test_a_live_holder_is_refused_by_name(holder):
  workdir, proc = holder
  before = (workdir / lock.LOCK_FILE).read_bytes()
  with pytest.raises(lock.WorkdirBusy) as info:
    lock.acquire(str(workdir))
  message = str(info.value)
  assert f"pid {proc.pid}" in message and socket.gethostname() in message
  assert "since" in message and "\n" not in message
  with pytest.raises(lock.WorkdirBusy, match=f"pid {proc.pid}"):
    lock.check_free(str(workdir))
  assert (workdir / lock.LOCK_FILE).read_bytes() == before  # the holder's file, untouched
  assert isinstance(info.value, ValueError)  # main's "bad input", exit 2


def test_a_killed_holders_file_does_not_block(holder):
  workdir, proc = holder
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  leftover = json.loads((workdir / lock.LOCK_FILE).read_text())
  assert leftover["pid"] == proc.pid  # the file stays, but the OS released the flock
  lock.check_free(str(workdir))
  fd = lock.acquire(str(workdir))
  try:
    assert json.loads((workdir / lock.LOCK_FILE).read_text())["pid"] == os.getpid()
  finally:
    lock.release(str(workdir), fd)
  assert not (workdir / lock.LOCK_FILE).exists()  # a clean end leaves no file


def test_a_group_takes_all_locks_or_none(holder, tmp_path):
  busy, _ = holder
  free = tmp_path / "free"
  with pytest.raises(lock.WorkdirBusy):
    with lock.hold(str(free), str(busy)):
      pytest.fail("entered with one workdir busy")
  assert not (free / lock.LOCK_FILE).exists()  # the first lock was given back
  with lock.hold(str(free)):
    with pytest.raises(lock.WorkdirBusy):
      lock.acquire(str(free))  # held (flock is per open file, even in one process)


def test_a_released_lock_can_be_taken_again_and_a_stale_fd_is_not_trusted(tmp_path):
  workdir = str(tmp_path / "run")
  first = lock.acquire(workdir)
  stale = os.open(lock.lock_path(workdir), os.O_RDWR)  # opened before the holder ends
  lock.release(workdir, first)
  second = lock.acquire(workdir)  # a new file: the deleted one no longer counts
  try:
    assert not os.path.samestat(os.fstat(stale), os.stat(lock.lock_path(workdir)))
  finally:
    os.close(stale)
    lock.release(workdir, second)


def test_a_workdir_that_is_a_file_is_unusable_and_left_alone(tmp_path):
  path = tmp_path / "run"
  path.write_text("notes")
  with pytest.raises(lock.WorkdirUnusable, match="is a file"):
    lock.acquire(str(path))
  with pytest.raises(lock.WorkdirUnusable, match="a parent is a file"):
    lock.acquire(str(path / "sub"))
  assert path.read_text() == "notes" and sorted(os.listdir(tmp_path)) == ["run"]
