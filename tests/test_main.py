"""The training CLI end to end (`python -m rnn_research.main`, `python -m rnn_research.sample`).

Every test runs the real entry points as subprocesses from the repository root (so `configs` is
importable), on tiny models and tasks: a smoke run of every shipped task config, bad input
(exit 2, nothing written), refusing and overwriting a different run, divergence (exit 3, the
last good checkpoint restorable), exact resume after SIGKILL, SIGTERM preemption, fallback
past a corrupt checkpoint, and sampling.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import ml_collections
import numpy as np
import pytest

from rnn_research.training import train
from rnn_research.training.checkpointing import Checkpointer
from rnn_research.training.metric_writer import read_scalars
from rnn_research.training.status import read_status

# Every test here spawns the real entry points as processes: the slow set (-m "not slow" skips it).
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
TASK_CONFIGS = sorted(p.stem for p in (ROOT / "configs" / "tasks").glob("*.py")
                      if p.stem != "__init__")

# A few tiny steps: checkpoints at 2 and 3 (the end), eval and diagnostics at 3.
TINY = {"train.steps": 3, "train.batch_size": 4, "model.hidden_size": 4, "train.eval_every": 3,
        "train.log_every": 1, "train.checkpoint_every": 2, "train.diagnostics_every": 3}
# Each task shrunk as far as its keys allow (temperature and vowels are fixed real data sets).
SHRINK = {
    "adding": {"task.length": 10, "task.eval_size": 8},
    "charlm": {"task.length": 16, "task.eval_windows": 4, "task.eval_length": 16},
    "charlm_tbptt": {"task.length": 16, "task.eval_windows": 4, "task.eval_length": 16,
                     "task.stream_length": 16, "train.tbptt_window": 8},
    "copy": {"task.copy_length": 2, "task.delay": 3, "task.eval_size": 8},
    "kalman": {"task.length": 10, "task.eval_size": 8},
    "multiscale": {"task.length": 10, "task.eval_size": 8},
    "pendulum": {"task.length": 10, "task.eval_size": 8},
    "temperature": {},
    "vowels": {},
}
REQUIRED_SCALARS = ("train/loss", "eval/loss", "grad/global_norm",
                    "grad_flow/ratio_first_last/layer_0")
TIMEOUT = 180


def _env() -> dict[str, str]:
  env = dict(os.environ)
  env.setdefault("JAX_PLATFORMS", "cpu")  # deterministic, and no accelerator probing
  return env


def _args(task: str, overrides: dict | None = None, workdir: Path | None = None,
          overwrite: bool = False, module: str = "rnn_research.main") -> list[str]:
  args = [sys.executable, "-m", module, f"--config=configs/tasks/{task}.py"]
  if workdir is not None:
    args.append(f"--workdir={workdir}")
  args += [f"--config.{k}={v}" for k, v in (overrides or {}).items()]
  if overwrite:
    args.append("--overwrite")
  return args


def tiny(task: str, **changes) -> dict:
  """The tiny overrides of `task`; `changes` use `__` for dots (train__steps=5)."""
  return {**TINY, **SHRINK[task], **{k.replace("__", "."): v for k, v in changes.items()}}


def cli(task: str, workdir: Path, overrides: dict | None = None, overwrite: bool = False,
        timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
  return subprocess.run(_args(task, overrides, workdir, overwrite), cwd=ROOT, env=_env(),
                        capture_output=True, text=True, timeout=timeout)


def popen(task: str, workdir: Path, overrides: dict, log: Path) -> subprocess.Popen:
  """Starts a run in the background, its stdout and stderr going to the file `log`."""
  with open(log, "w") as f:
    return subprocess.Popen(_args(task, overrides, workdir), cwd=ROOT, env=_env(),
                            stdout=f, stderr=subprocess.STDOUT)


def checked(proc: subprocess.CompletedProcess, code: int = 0) -> subprocess.CompletedProcess:
  assert proc.returncode == code, (
      f"exit {proc.returncode} (expected {code})\nstdout:\n{proc.stdout[-3000:]}\n"
      f"stderr:\n{proc.stderr[-5000:]}")
  return proc


def steps_on_disk(workdir: Path) -> list[int]:
  ckpts = workdir / "checkpoints"
  if not ckpts.is_dir():
    return []
  return sorted(int(p.name) for p in ckpts.iterdir() if p.name.isdigit())


def signal_after_checkpoint(proc, workdir, log, sig: int, timeout: float) -> None:
  """Sends `sig` once `proc` has saved a checkpoint and waits for it to exit (killed if not)."""
  try:
    wait_for_checkpoint(proc, workdir, log)
    proc.send_signal(sig)
    proc.wait(timeout=timeout)
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()


def wait_for_checkpoint(proc: subprocess.Popen, workdir: Path, log: Path,
                        timeout: float = TIMEOUT) -> int:
  """Polls until a finalized checkpoint step exists; returns it (fails if `proc` ends first)."""
  deadline = time.time() + timeout
  while time.time() < deadline:
    steps = steps_on_disk(workdir)
    if steps:
      return steps[0]
    if proc.poll() is not None:
      pytest.fail(f"run ended (exit {proc.returncode}) before any checkpoint:\n"
                  f"{log.read_text()[-5000:]}")
    time.sleep(0.005)
  proc.kill()
  pytest.fail("no checkpoint appeared in time")


def snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
  """Every file under `directory`: (contents, mtime_ns)."""
  return {str(p.relative_to(directory)): (p.read_bytes(), p.stat().st_mtime_ns)
          for p in sorted(directory.rglob("*")) if p.is_file()}


def stored_config(workdir: Path) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(json.loads((workdir / "config.json").read_text()))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
  """tiny_run(task): the workdir of one completed tiny run of `task` (run once per session)."""
  runs: dict[str, Path] = {}

  def get(task: str) -> Path:
    if task not in runs:
      workdir = tmp_path_factory.mktemp(f"tiny_{task}") / "run"
      checked(cli(task, workdir, tiny(task)))
      runs[task] = workdir
    return runs[task]

  return get


def copy_of(workdir: Path, tmp_path: Path) -> Path:
  dst = tmp_path / "run"
  shutil.copytree(workdir, dst)
  return dst


# ----------------------------------------------------------------------------------- smoke


@pytest.mark.parametrize("task", TASK_CONFIGS)
def test_smoke_every_task_config(task, tiny_run):
  workdir = tiny_run(task)
  status = read_status(str(workdir))
  assert status["state"] == "completed", status
  assert status["step"] == 3
  assert status["metrics"] and "loss" in status["metrics"]
  assert all(math.isfinite(v) for v in status["metrics"].values()), status["metrics"]
  config = json.loads((workdir / "config.json").read_text())
  assert config["task"]["name"] == task.removesuffix("_tbptt") and config["train"]["steps"] == 3
  assert (workdir / "checkpoints" / "3").is_dir()
  assert steps_on_disk(workdir) == [2, 3]
  scalars = read_scalars(str(workdir))
  for tag in REQUIRED_SCALARS:
    assert tag in scalars, f"{tag} missing; tags: {sorted(scalars)}"
    assert all(math.isfinite(v) for _, v in scalars[tag]), (tag, scalars[tag])
  assert [s for s, _ in scalars["train/loss"]] == [1, 2, 3]
  assert [s for s, _ in scalars["eval/loss"]] == [3]
  assert scalars["eval/loss"][-1][1] == pytest.approx(status["metrics"]["loss"], rel=1e-6)


def test_task_configs_are_all_covered():
  assert len(TASK_CONFIGS) == 9 and set(TASK_CONFIGS) == set(SHRINK)


# ------------------------------------------------------------------------------- bad input


def test_unknown_config_key_fails_naming_it(tmp_path):
  workdir = tmp_path / "run"
  proc = cli("kalman", workdir, {"model.foo": 1})
  assert proc.returncode != 0
  assert "foo" in proc.stderr
  assert not workdir.exists() or not any(workdir.iterdir())


def test_bad_value_exits_2_with_choices_and_writes_nothing(tmp_path):
  workdir = tmp_path / "run"
  proc = checked(cli("kalman", workdir, {**tiny("kalman"), "model.cell": "lsmt"}), 2)
  assert "valid choices" in proc.stderr
  assert "lsmt" in proc.stderr
  assert not workdir.exists() or not any(workdir.iterdir())


def test_different_config_in_workdir_is_refused_untouched(tiny_run, tmp_path):
  workdir = copy_of(tiny_run("kalman"), tmp_path)
  before = snapshot(workdir)
  proc = checked(cli("kalman", workdir, tiny("kalman", model__hidden_size=5)), 2)
  assert "--overwrite" in proc.stderr
  assert "hidden_size" in proc.stderr
  assert snapshot(workdir) == before


def test_overwrite_moves_old_run_aside(tiny_run, tmp_path):
  workdir = copy_of(tiny_run("kalman"), tmp_path)
  before = snapshot(workdir)
  checked(cli("kalman", workdir, tiny("kalman", model__hidden_size=5), overwrite=True))
  assert not list(workdir.glob("*replaced-*"))  # not inside the run's TensorBoard tree
  replaced = sorted(workdir.parent.glob("run.replaced-*"))  # a sibling: <workdir>.replaced-<time>
  assert len(replaced) == 1 and replaced[0].name[len("run.replaced-"):].count("-") == 1
  moved = snapshot(replaced[0])
  assert {k: v[0] for k, v in moved.items()} == {k: v[0] for k, v in before.items()}
  assert json.loads((replaced[0] / "config.json").read_text())["model"]["hidden_size"] == 4
  assert json.loads((workdir / "config.json").read_text())["model"]["hidden_size"] == 5
  status = read_status(str(workdir))
  assert status["state"] == "completed" and status["step"] == 3
  assert steps_on_disk(workdir) == [2, 3]


# ------------------------------------------------------------------------------ divergence


def test_divergence_exits_3_and_keeps_last_good_checkpoint(tmp_path):
  workdir = tmp_path / "run"
  overrides = tiny("adding", train__steps=20, train__checkpoint_every=1, train__eval_every=20,
                   train__diagnostics_every=20, model__cell="rnn", model__activation="relu",
                   model__recurrent_init="identity", model__recurrent_scale=3.0,
                   train__learning_rate=1e3, train__clip="none", train__schedule="constant",
                   train__max_loss=1e30)  # the non-finite check, not the max_loss bound
  proc = checked(cli("adding", workdir, overrides), 3)
  status = read_status(str(workdir))
  assert status["state"] == "diverged", status
  bad_step = status["step"]
  assert 1 < bad_step < 20  # diverges within a few steps, after one good checkpoint
  assert f"step {bad_step}" in status["message"]
  assert f"step {bad_step}" in proc.stderr
  steps = steps_on_disk(workdir)
  assert steps and max(steps) == bad_step - 1, steps
  _, _, state, _ = train.init_state(stored_config(workdir))
  step, restored = Checkpointer(str(workdir / "checkpoints")).restore(state)
  assert step == bad_step - 1 and int(restored["step"]) == step
  leaves = [np.asarray(x) for x in jax.tree.leaves(restored["params"])]
  assert leaves and all(np.all(np.isfinite(x)) for x in leaves)


# ---------------------------------------------------------------------------------- resume


def test_resume_after_sigkill_is_exact(tmp_path):
  steps = 80
  overrides = tiny("kalman", train__steps=steps, train__checkpoint_every=10,
                   train__log_every=10, train__eval_every=20, train__diagnostics_every=20)
  a, b, log = tmp_path / "a", tmp_path / "b", tmp_path / "b.log"
  checked(cli("kalman", a, overrides))

  proc = popen("kalman", b, overrides, log)
  signal_after_checkpoint(proc, b, log, signal.SIGKILL, timeout=30)
  assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
  killed = read_status(str(b))
  assert killed["state"] == "running" and killed["step"] < steps, killed
  saved = steps_on_disk(b)
  assert saved and max(saved) < steps, saved
  rerun = checked(cli("kalman", b, overrides))  # the same command again resumes
  assert f"resumed from step {max(saved)}" in rerun.stderr

  sa, sb = read_status(str(a)), read_status(str(b))
  assert sb["state"] == sa["state"] == "completed"
  assert sb["step"] == sa["step"] == steps
  assert sb["metrics"] == sa["metrics"]
  ra, rb = read_scalars(str(a)), read_scalars(str(b))
  assert rb["eval/loss"][-1] == ra["eval/loss"][-1]
  assert rb["eval/loss"][-1][0] == steps
  assert rb["eval/loss"] == ra["eval/loss"]
  assert rb["train/loss"] == ra["train/loss"]


def test_sigterm_preempts_and_rerun_completes(tmp_path):
  # Far more steps than it gets to run: SIGTERM surely lands mid-run. Only train.steps may
  # change between runs in one workdir, so the rerun then asks for a few more steps only.
  steps = 5000
  overrides = tiny("kalman", train__steps=steps, train__checkpoint_every=10,
                   train__log_every=100, train__eval_every=steps,
                   train__diagnostics_every=steps)
  workdir, log = tmp_path / "run", tmp_path / "run.log"
  proc = popen("kalman", workdir, overrides, log)
  signal_after_checkpoint(proc, workdir, log, signal.SIGTERM, timeout=60)
  assert proc.returncode == 0, log.read_text()[-5000:]
  assert "SIGTERM" in log.read_text()
  status = read_status(str(workdir))
  assert status["state"] == "preempted", status
  stopped = status["step"]
  assert 10 <= stopped < steps
  assert max(steps_on_disk(workdir)) == stopped  # saved where it stopped

  rerun = checked(cli("kalman", workdir, {**overrides, "train.steps": stopped + 5}))
  assert f"resumed from step {stopped}" in rerun.stderr
  status = read_status(str(workdir))
  assert status["state"] == "completed" and status["step"] == stopped + 5, status
  assert all(math.isfinite(v) for v in status["metrics"].values())
  assert stopped + 5 in steps_on_disk(workdir)


@pytest.mark.parametrize("only_array_data", [False, True], ids=["every_file", "array_data"])
def test_corrupt_latest_checkpoint_falls_back(tiny_run, tmp_path, only_array_data):
  workdir = copy_of(tiny_run("kalman"), tmp_path)
  assert steps_on_disk(workdir) == [2, 3]
  for path in (workdir / "checkpoints" / "3").rglob("*"):
    if path.is_file() and (path.parent.name == "d" or not only_array_data):
      path.write_bytes(b"\x00garbage\xff" * 7)
  proc = checked(cli("kalman", workdir, tiny("kalman", train__steps=5)))
  warnings = [line for line in proc.stderr.splitlines() if "unreadable" in line]
  assert len(warnings) == 1 and "step 3" in warnings[0], proc.stderr[-5000:]
  assert str(workdir / "checkpoints" / "3") in warnings[0] and len(warnings[0]) < 400
  assert "Error: " in warnings[0]  # the exception's type and a short reason
  for noise in ("Traceback", "tensorstore_spec", "Event loop is closed", "never retrieved",
                "Failed to read"):
    assert noise not in proc.stderr, proc.stderr[-5000:]
  assert "resumed from step 2" in proc.stderr
  status = read_status(str(workdir))
  assert status["state"] == "completed" and status["step"] == 5
  assert 5 in steps_on_disk(workdir)
  # train/loss was re-logged from step 3 on by the resumed run
  assert [s for s, _ in read_scalars(str(workdir))["train/loss"]] == [1, 2, 3, 4, 5]


# -------------------------------------------------------------------------------- sampling


def test_sample_from_charlm_run(tiny_run):
  from rnn_research.tasks import TASKS

  workdir = tiny_run("charlm")
  proc = checked(subprocess.run(
      [sys.executable, "-m", "rnn_research.sample", f"--workdir={workdir}", "--prompt=ROMEO",
       "--length=20", "--temperature=0.8"],
      cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=TIMEOUT))
  assert proc.stdout.endswith("\n")
  text = proc.stdout[:-1]  # print's newline; sampled characters may be newlines too
  assert text.startswith("ROMEO") and len(text) == len("ROMEO") + 20, repr(proc.stdout)
  config = stored_config(workdir)
  vocab = set(TASKS.get("charlm")(config.task, 1, 0).vocab)
  assert set(text[len("ROMEO"):]) <= vocab, repr(text)


def test_sample_refuses_non_charlm_run(tiny_run):
  workdir = tiny_run("kalman")
  proc = subprocess.run(
      [sys.executable, "-m", "rnn_research.sample", f"--workdir={workdir}", "--prompt=ROMEO",
       "--length=5"], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=TIMEOUT)
  assert proc.returncode != 0
  assert "charlm" in proc.stderr and "kalman" in proc.stderr
  assert not proc.stdout.strip()


# ---------------------------------------------------------------------------------- --seeds


def seeds_cli(workdir: str, seeds: str) -> subprocess.CompletedProcess:
  return subprocess.run(_args("kalman", tiny("kalman")) + [f"--workdir={workdir}",
                                                           f"--seeds={seeds}"],
                        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=TIMEOUT)


def test_seeds_train_one_run_dir_per_seed(tmp_path):
  checked(seeds_cli(f"{tmp_path}/seed={{seed}}", "0,1"))
  assert sorted(p.name for p in tmp_path.iterdir()) == ["seed=0", "seed=1"]
  losses = []
  for seed in (0, 1):
    workdir = tmp_path / f"seed={seed}"
    status = read_status(str(workdir))
    assert status["state"] == "completed" and status["step"] == 3, status
    assert all(math.isfinite(v) for v in status["metrics"].values())
    losses.append(status["metrics"]["loss"])
    config = json.loads((workdir / "config.json").read_text())
    assert config["train"]["seed"] == seed and config["train"]["steps"] == 3
    assert steps_on_disk(workdir) == [2, 3]
    scalars = read_scalars(str(workdir))
    assert [s for s, _ in scalars["train/loss"]] == [1, 2, 3]
    assert scalars["eval/loss"][-1][1] == pytest.approx(status["metrics"]["loss"], rel=1e-6)
  assert losses[0] != losses[1]


@pytest.mark.parametrize("workdir,seeds,message", [
    ("run", "0,1", "--seeds needs {seed} in --workdir"),
    ("seed={seed}", "0,x", "--seeds must be integers, got '0,x'"),
    ("seed={seed}", "1.5", "--seeds must be integers, got '1.5'"),
])
def test_bad_seeds_exit_2_with_one_line(tmp_path, workdir, seeds, message):
  proc = checked(seeds_cli(f"{tmp_path}/{workdir}", seeds), 2)
  lines = [line for line in proc.stderr.splitlines() if "bad input" in line]
  assert len(lines) == 1 and message in lines[0], proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr
  assert not any(tmp_path.iterdir())


# ------------------------------------------------------------------------------ robustness


def bad_input_line(proc: subprocess.CompletedProcess) -> str:
  """The one `bad input` line of a run that exited 2, without a traceback."""
  checked(proc, 2)
  lines = [line for line in proc.stderr.splitlines() if "bad input" in line]
  assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-5000:]
  return lines[0]


def hold_lock(workdir: Path) -> subprocess.Popen:
  """Another process that holds `workdir`'s lock (as a running `main` does) until killed."""
  code = ("import sys, time\nfrom rnn_research.training import lock\n"
          "lock.acquire(sys.argv[1])\nprint('held', flush=True)\ntime.sleep(300)\n")
  proc = subprocess.Popen([sys.executable, "-c", code, str(workdir)], cwd=ROOT, env=_env(),
                          stdout=subprocess.PIPE, text=True)
  assert proc.stdout.readline().strip() == "held"
  return proc


def test_second_main_on_a_busy_workdir_exits_2_naming_the_holder(tiny_run, tmp_path):
  workdir = copy_of(tiny_run("kalman"), tmp_path)
  holders = [hold_lock(workdir), hold_lock(tmp_path / "seed=1")]
  try:
    before = snapshot(workdir)
    line = bad_input_line(cli("kalman", workdir, tiny("kalman", train__steps=5)))
    assert f"pid {holders[0].pid}" in line and "since" in line and "in use" in line
    seeds = subprocess.run(_args("kalman", tiny("kalman")) + [
        f"--workdir={tmp_path}/seed={{seed}}", "--seeds=0,1"], cwd=ROOT, env=_env(),
        capture_output=True, text=True, timeout=TIMEOUT)
    assert f"pid {holders[1].pid}" in bad_input_line(seeds)  # seed=0 is free, seed=1 is not
    assert snapshot(workdir) == before
    assert not (tmp_path / "seed=0").exists()
  finally:
    for holder in holders:
      holder.kill()
      holder.wait()


def test_a_killed_processs_lock_file_does_not_block(tmp_path):
  workdir = tmp_path / "run"
  holder = hold_lock(workdir)
  holder.kill()
  holder.wait()
  assert (workdir / ".lock").exists()  # left behind by the killed process
  checked(cli("kalman", workdir, tiny("kalman")))
  assert read_status(str(workdir))["state"] == "completed"
  assert not (workdir / ".lock").exists()


def test_unusable_workdir_exits_2_and_changes_nothing(tmp_path):
  afile = tmp_path / "afile"
  afile.write_text("notes")
  assert "is a file" in bad_input_line(cli("kalman", afile, tiny("kalman")))
  assert afile.read_text() == "notes" and sorted(os.listdir(tmp_path)) == ["afile"]


def test_read_only_workdir_exits_2_and_writes_nothing(tmp_path):
  workdir = tmp_path / "ro"
  workdir.mkdir()
  workdir.chmod(0o555)
  prefix = []
  if os.geteuid() == 0:  # root writes anywhere: run without the capability that allows it
    if not shutil.which("setpriv"):
      pytest.skip("root, and no setpriv to drop CAP_DAC_OVERRIDE")
    prefix = ["setpriv", "--bounding-set", "-dac_override"]
  try:
    proc = subprocess.run(prefix + _args("kalman", tiny("kalman"), workdir), cwd=ROOT,
                          env=_env(), capture_output=True, text=True, timeout=TIMEOUT)
    line = bad_input_line(proc)
    assert str(workdir) in line and "permission denied" in line
    assert not os.listdir(workdir)
  finally:
    workdir.chmod(0o755)


CONFIG_FILES = {
    "dict.py": ("def get_config(arg=None):\n  return {'train': {'steps': 3}}\n",
                "get_config() returned a dict, not an ml_collections.ConfigDict"),
    "raises.py": ("def get_config(arg=None):\n  raise RuntimeError('no such preset')\n",
                  "raises.py:2 raised RuntimeError: no such preset"),
    "imports.py": ("import no_such_module\n", "raised ModuleNotFoundError"),
}


@pytest.mark.parametrize("name", [*CONFIG_FILES, "missing.py", "default.py:charlm"])
def test_bad_config_file_exits_2_with_one_line(tmp_path, name):
  for file, (text, _) in CONFIG_FILES.items():
    (tmp_path / file).write_text(text)
  config = (f"{ROOT}/configs/{name}" if name.startswith("default") else f"{tmp_path}/{name}")
  workdir = tmp_path / "run"
  proc = subprocess.run([sys.executable, "-m", "rnn_research.main", f"--config={config}",
                         f"--workdir={workdir}"], cwd=ROOT, env=_env(), capture_output=True,
                        text=True, timeout=TIMEOUT)
  line = bad_input_line(proc)
  expected = {"missing.py": "missing.py does not exist",
              "default.py:charlm": "default.for_task('charlm'"}
  assert (expected.get(name) or CONFIG_FILES[name][1]) in line
  assert config.split(":")[0] in line  # names the file
  assert not workdir.exists()


def test_config_file_loads_from_another_directory(tmp_path):
  # Only the package is importable (as after `pip install`), not the repository's `configs`.
  site = tmp_path / "site"
  site.mkdir()
  (site / "rnn_research").symlink_to(ROOT / "rnn_research")
  env = {**_env(), "PYTHONPATH": str(site)}
  workdir = tmp_path / "run"
  args = _args("kalman", tiny("kalman"), workdir)
  args[3] = f"--config={ROOT}/configs/tasks/kalman.py"  # absolute, from tmp_path
  checked(subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=TIMEOUT))
  assert read_status(str(workdir))["state"] == "completed"


def test_completed_run_with_every_checkpoint_unreadable_stays_completed(tiny_run, tmp_path):
  workdir = copy_of(tiny_run("kalman"), tmp_path)
  for path in (workdir / "checkpoints").rglob("*"):
    if path.is_file():
      path.write_bytes(b"\x00garbage\xff" * 7)
  before = snapshot(workdir)
  proc = checked(cli("kalman", workdir, tiny("kalman")))
  assert "already completed at step 3" in proc.stderr
  assert snapshot(workdir) == before  # nothing trained, nothing rewritten
  assert read_status(str(workdir))["state"] == "completed"


def test_max_to_keep_below_1_exits_2_naming_the_key(tmp_path):
  workdir = tmp_path / "run"
  line = bad_input_line(cli("kalman", workdir, tiny("kalman", train__max_to_keep=0)))
  assert "config.train.max_to_keep" in line
  assert not workdir.exists()
