"""The sweep's worker (experiments/worker.py): a member trained in a worker is the member that
`main` trains, bit for bit; a bad or diverging member is answered with main's exit code and
the worker goes on; a worker that dies is started again."""
from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from rnn_research.experiments import launch, sweep_runner, sweep_spec, worker
from rnn_research.training.status import read_status

ROOT = Path(__file__).resolve().parents[1]
SWEEP = '''
"""Two seeds of a tiny ReLU RNN that learns, and one that diverges."""
from configs import default
from rnn_research.experiments.sweep_spec import seeds


def get_config(arg=None):
  config = default.for_task("kalman", cell="rnn", hidden_size=4, steps=6, batch_size=4)
  config.task.length = 10
  config.task.eval_size = 8
  config.train.eval_every = config.train.checkpoint_every = 3
  config.model.activation = "relu"
  config.model.recurrent_init = "identity"
  return config


def get_sweep():
  return seeds(2) + [{"model.recurrent_scale": 10000.0, "train.seed": 0}]
'''


@pytest.fixture
def sweep_file(tmp_path: Path) -> str:
  path = tmp_path / "tiny.py"
  path.write_text(textwrap.dedent(SWEEP))
  return str(path)


def request(sweep: str, index: int, workdir: Path, overrides: tuple[str, ...] = ()) -> dict:
  name = sweep_spec.load(sweep).names[index]
  workdir.mkdir(parents=True, exist_ok=True)
  return {"sweep": sweep, "overrides": list(overrides), "indices": [index],
          "workdirs": [str(workdir / name)], "log": str(workdir / f"{name}.log")}


def serve(*requests: dict) -> list[int]:
  """The exit codes a worker (in this process) answers to `requests`."""
  answers = io.StringIO()
  worker.serve(io.StringIO("".join(json.dumps(r) + "\n" for r in requests)), answers)
  return [json.loads(line)["returncode"] for line in answers.getvalue().splitlines()]


def test_output_to_sends_fds_1_and_2_to_the_log_and_restores_them(tmp_path, capfd):
  log = tmp_path / "member.log"
  with worker.output_to(str(log)):
    os.write(1, b"out\n")
    os.write(2, b"err\n")
    subprocess.run([sys.executable, "-c", "print('child')"], check=True)
  os.write(1, b"after\n")
  assert log.read_text().split() == ["out", "err", "child"]
  assert capfd.readouterr().out == "after\n"


def test_a_member_trained_in_a_worker_is_the_one_main_trains(tmp_path, sweep_file):
  swp = sweep_spec.load(sweep_file)
  in_worker, by_main = tmp_path / "worker", tmp_path / "main"
  assert serve(request(sweep_file, 1, in_worker)) == [0]
  argv = sweep_runner.member_argv(swp, swp.members[1], str(by_main / swp.names[1]))
  subprocess.run(argv, cwd=ROOT, check=True, capture_output=True)
  a, b = (read_status(str(d / swp.names[1])) for d in (in_worker, by_main))
  assert a["state"] == b["state"] == "completed" and a["step"] == 6
  assert a["metrics"] == b["metrics"]  # bit for bit: the same config, data and program
  for d in (in_worker, by_main):
    assert json.loads((d / swp.names[1] / "config.json").read_text()) == \
        json.loads((by_main / swp.names[1] / "config.json").read_text())


def test_bad_and_diverging_members_get_mains_exit_code_and_the_worker_goes_on(tmp_path,
                                                                              sweep_file):
  missing = {**request(sweep_file, 0, tmp_path), "sweep": str(tmp_path / "nope.py")}
  codes = serve(missing, request(sweep_file, 2, tmp_path), request(sweep_file, 0, tmp_path))
  assert codes == [2, 3, 0]
  names = sweep_spec.load(sweep_file).names
  assert read_status(str(tmp_path / names[2]))["state"] == "diverged"
  assert read_status(str(tmp_path / names[0]))["state"] == "completed"


def test_overrides_reach_the_member(tmp_path, sweep_file):
  assert serve(request(sweep_file, 0, tmp_path, ("train.steps=3",))) == [0]
  assert read_status(str(tmp_path / "seed=0"))["step"] == 3


@pytest.mark.slow  # starts real worker processes
def test_a_worker_that_dies_mid_job_is_reported_and_started_again(tmp_path, sweep_file):
  (tmp_path / "logs").mkdir()
  start = lambda slot, argv, **popen: launch.spawn(argv, [os.sched_getaffinity(0).pop()],  # noqa
                                                   str(tmp_path), cwd=ROOT, **popen)
  pool = worker.Workers(start, str(tmp_path))
  swp = sweep_spec.load(sweep_file)
  job = lambda i, steps: launch.Job(  # noqa: E731
      [swp.names[i]], [], request(sweep_file, i, tmp_path, (f"train.steps={steps}",)))
  try:
    pool.start(0, job(0, 100000))
    first = pool.busy()[0]
    while not (tmp_path / "seed=0" / "status.json").exists():
      assert pool.ended(0.2) == []
    first.send_signal(signal.SIGKILL)
    assert pool.ended(30) == [(0, -signal.SIGKILL)]
    pool.start(0, job(1, 3))
    assert pool.busy()[0] is not first
    ended = []
    while not ended:
      ended = pool.ended(1)
    assert ended == [(0, 0)]
    assert read_status(str(tmp_path / "seed=1"))["state"] == "completed"
    log = (tmp_path / "logs" / "seed=1.log").read_text()  # the member's output, and only its
    assert "done at step 3" in log and "seed=0" not in log
  finally:
    pool.close()
  assert all(p.poll() is not None for p in pool.procs.values())
