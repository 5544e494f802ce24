"""The training loop's run hygiene: exploded runs end `diverged` (`train.max_loss`), milestones
follow `train.steps` unless set, the speed and ETA leave out the compiling step, `wall_time`
adds up over restarts, and SIGINT saves and stops like SIGTERM (a real `main` process)."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from absl import flags
from ml_collections import config_flags

from configs import default
from rnn_research.training import train
from rnn_research.training.loop import Pace, cadence, stop_flag
from rnn_research.training.metric_writer import read_scalars
from rnn_research.training.status import read_status, write_status

ROOT = Path(__file__).resolve().parents[1]


def tiny(steps: int, task: str = "kalman", **train_changes):
  """A 4-unit model on 10-step sequences; milestones left to follow `steps`."""
  config = default.base(task)
  config.task.length = 10
  config.task.eval_size = 8
  config.model.hidden_size = 4
  config.train.steps, config.train.batch_size = steps, 4
  config.train.update(train_changes)
  return config


def steps_on_disk(workdir: Path) -> list[int]:
  ckpts = workdir / "checkpoints"
  return sorted(int(p.name) for p in ckpts.iterdir() if p.name.isdigit()) if ckpts.is_dir() else []


# ------------------------------------------------------------------------------- cadence


def test_cadence_follows_steps_unless_set():
  cfg = tiny(200).train
  assert cadence(cfg) == {"eval_every": 34, "checkpoint_every": 34, "diagnostics_every": 34,
                          "log_every": 10}
  cfg.steps = 5
  assert set(cadence(cfg).values()) == {1}
  cfg.steps, cfg.eval_every, cfg.log_every = 200, 50, 7  # a value that is set wins
  assert cadence(cfg) == {"eval_every": 50, "checkpoint_every": 34, "diagnostics_every": 34,
                          "log_every": 7}


def test_a_shipped_config_shortened_on_the_command_line_follows_its_steps():
  argv = ["main", f"--config={ROOT}/configs/tasks/kalman.py", "--config.train.steps=200",
          "--config.train.checkpoint_every=50"]
  values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=True,
                                  sys_argv=argv)
  values(argv)
  cfg = values.config.train
  assert cfg.checkpoint_every == 50 and isinstance(cfg.checkpoint_every, int)  # parsed as int
  assert cfg.eval_every is None  # config.json records what was given
  assert cadence(cfg) == {"eval_every": 34, "checkpoint_every": 50, "diagnostics_every": 34,
                          "log_every": 10}


@pytest.mark.parametrize("key,value", [("eval_every", 0), ("log_every", -1), ("max_loss", 0.0),
                                       ("max_loss", -1.0)])
def test_bad_cadence_or_max_loss_is_refused_before_writing(tmp_path, key, value):
  config = tiny(4)
  config.train[key] = value
  with pytest.raises(ValueError, match=f"config.train.{key}"):
    train.train_and_evaluate(config, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()


@pytest.mark.slow  # a whole (tiny) training run
def test_milestones_of_a_short_run_follow_its_steps(tmp_path):
  train.train_and_evaluate(tiny(40), str(tmp_path))
  scalars = read_scalars(str(tmp_path))
  assert [s for s, _ in scalars["eval/loss"]] == [7, 14, 21, 28, 35, 40]
  assert [s for s, _ in scalars["train/loss"]] == list(range(2, 41, 2))
  assert steps_on_disk(tmp_path) == [28, 35, 40]  # max_to_keep 3
  assert json.loads((tmp_path / "config.json").read_text())["train"]["eval_every"] is None


# ------------------------------------------------------------------------------ max_loss


def exploded_relu(**train_changes):
  """A 4-unit relu rnn at recurrent gain 2 on 50-step Kalman sequences: measured, its train
  loss is 1e18 at step 1 and stays above 1e15, finite (the default config's is 1.3)."""
  config = tiny(3, **train_changes)
  config.task.length = 50
  config.model.update(cell="rnn", activation="relu", recurrent_scale=2.0)
  return config


@pytest.mark.slow  # two whole (tiny) training runs
def test_an_exploded_relu_rnn_ends_diverged(tmp_path):
  # Without the bound it completes with a huge but finite loss: what happened before it.
  metrics = train.train_and_evaluate(exploded_relu(max_loss=math.inf), str(tmp_path / "off"))
  assert math.isfinite(metrics["loss"]) and metrics["loss"] > 1e12
  assert read_status(str(tmp_path / "off"))["state"] == "completed"
  with pytest.raises(train.Diverged, match=r"train/loss \S+ > train\.max_loss 1e\+10"):
    train.train_and_evaluate(exploded_relu(), str(tmp_path / "on"))
  status = read_status(str(tmp_path / "on"))
  assert status["state"] == "diverged" and status["step"] == 1, status
  assert "diverged at step 1: train/loss" in status["message"]


@pytest.mark.slow  # a whole (tiny) training run
def test_an_eval_loss_above_max_loss_diverges_and_is_not_saved(tmp_path):
  # A relu rnn at learning rate 100 (measured: train loss 8e4 at step 1, then the eval of the
  # updated model 7e7): the eval at step 1 catches it a step before the train loss would.
  config = tiny(4, schedule="constant", clip="none", learning_rate=100.0, seed=3,
                eval_every=1, checkpoint_every=1, max_loss=1e6)
  config.model.update(cell="rnn", activation="relu", recurrent_init="identity",
                      recurrent_scale=2.0)
  with pytest.raises(train.Diverged, match=r"diverged at step 1: eval/loss \S+ > train"):
    train.train_and_evaluate(config, str(tmp_path))
  status = read_status(str(tmp_path))
  assert status["state"] == "diverged" and status["step"] == 1
  assert steps_on_disk(tmp_path) == []  # the exploded state is not checkpointed


# ------------------------------------------------------------------ speed, ETA, wall time


def test_pace_leaves_out_the_compiling_step():
  pace = Pace()
  assert pace.eta(100) is None and pace.lap() == 0.0
  pace.add(30.0, compiled=True)  # the first step of a process: compiles
  for _ in range(10):
    pace.add(0.1, compiled=False)
  assert pace.eta(100) == pytest.approx(10.0)  # 100 steps at 0.1 s, not at 31 s / 11
  assert pace.lap() == pytest.approx(10.0)
  pace.add(0.5, compiled=False)
  assert pace.lap() == pytest.approx(2.0)  # a lap's rate is its own steps only
  assert pace.eta(12) == pytest.approx(12 * 1.5 / 11)  # the ETA uses every timed step


@pytest.mark.slow  # two whole (tiny) training runs
def test_wall_time_adds_up_over_restarts(tmp_path):
  train.train_and_evaluate(tiny(4, schedule="constant"), str(tmp_path))
  first = read_status(str(tmp_path))["wall_time"]
  assert 0 < first < 1000
  write_status(str(tmp_path), wall_time=1000.0)  # as if the first process had run 1000 s
  began = time.time()
  train.train_and_evaluate(tiny(6, schedule="constant"), str(tmp_path))
  status = read_status(str(tmp_path))
  assert status["step"] == 6
  assert 1000.0 < status["wall_time"] <= 1000.0 + time.time() - began


# ------------------------------------------------------------------------------- signals


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_stop_flag_records_the_signal_and_restores_the_handlers(sig):
  before = signal.getsignal(sig)
  with stop_flag() as stop:
    os.kill(os.getpid(), sig)
    time.sleep(0.01)
    assert stop["signal"] == sig.name
    if sig == signal.SIGINT:  # a second Ctrl-C interrupts at once
      with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), sig)
        time.sleep(0.5)
  assert signal.getsignal(sig) is before


def _main(workdir: Path, log: Path, steps: int) -> subprocess.Popen:
  args = [sys.executable, "-m", "rnn_research.main", "--config=configs/tasks/kalman.py",
          f"--workdir={workdir}", f"--config.train.steps={steps}", "--config.train.batch_size=4",
          "--config.model.hidden_size=4", "--config.task.length=10", "--config.task.eval_size=8",
          "--config.train.checkpoint_every=10", "--config.train.log_every=100"]
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  with open(log, "w") as f:
    return subprocess.Popen(args, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT)


@pytest.mark.slow  # a real `main` process, interrupted, then resumed
def test_ctrl_c_saves_where_it_stopped_and_exits_0(tmp_path):
  workdir, log = tmp_path / "run", tmp_path / "run.log"
  proc = _main(workdir, log, steps=20000)
  try:
    deadline = time.time() + 180
    while not steps_on_disk(workdir):  # training has started
      assert proc.poll() is None and time.time() < deadline, log.read_text()[-3000:]
      time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
  text = log.read_text()
  assert proc.returncode == 0, text[-3000:]
  assert "Traceback" not in text and "SIGINT: saved step" in text
  assert "train kalman: gru 4x1 (" in text and "steps 0->20000" in text  # the start line
  status = read_status(str(workdir))
  assert status["state"] == "preempted", status
  stopped = status["step"]
  assert 10 <= stopped < 20000 and max(steps_on_disk(workdir)) == stopped

  proc = _main(workdir, log, steps=stopped + 5)  # rerun: resumes and completes
  assert proc.wait(timeout=180) == 0, log.read_text()[-3000:]
  text = log.read_text()
  assert f"steps {stopped}->{stopped + 5}" in text
  assert f"done at step {stopped + 5} in" in text and str(workdir) in text.splitlines()[-1]
  final = read_status(str(workdir))
  assert final["state"] == "completed" and final["wall_time"] > status["wall_time"]
