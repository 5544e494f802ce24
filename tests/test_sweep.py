"""The sweep runner (`python -m rnn_research.sweep`): planning jobs, vmapped seed groups, the
child processes' environment and cores, outcomes, and whole tiny sweeps end to end.

One tiny real sweep (2 members x 2 seeds, one member diverging, one run resuming from a
checkpoint of an earlier, interrupted run) is trained once per module; the tests read it, rerun
it (nothing is trained again), break copies of it (a failing member), rerun its seeds vmapped
(the same metrics), on Ray, and compare it. Everything else is a dry run or in-process.
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from configs import default
from rnn_research.experiments import launch, sweep_runner as sweep, sweep_spec
from rnn_research.training import train
from rnn_research.training.metric_writer import read_scalars
from rnn_research.training.status import read_status, write_status

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 240

SWEEP_FILE = '''
"""A tiny test sweep: a ReLU RNN that learns, and one that diverges."""
from configs import default
from rnn_research.experiments.sweep_spec import product, seeds, sweep


def get_config(arg=None):
  config = default.for_task("kalman", cell="rnn", hidden_size=4, steps=4, batch_size=4)
  config.task.length = 10
  config.task.eval_size = 8
  t = config.train
  t.log_every, t.checkpoint_every, t.eval_every, t.diagnostics_every = 1, 2, 2, 4
  t.clip, t.schedule = "none", "constant"
  config.model.activation = "relu"
  config.model.recurrent_init = "identity"
  return config


def get_sweep():
  return product(sweep("model.recurrent_scale", [1.0, 10000.0]), seeds(2))
'''
GOOD = ["recurrent_scale=1,seed=0", "recurrent_scale=1,seed=1"]
BAD = ["recurrent_scale=10000,seed=0", "recurrent_scale=10000,seed=1"]
NAMES = GOOD + BAD  # the order of get_sweep()
RESUMED = GOOD[1]  # interrupted at step 2 before the sweep runs
SUMMARY = re.compile(r"sweep \S+: (\d+) completed, (\d+) diverged, (\d+) failed.*"
                     r"\((\d+) skipped as done\)")


def _env() -> dict[str, str]:
  env = dict(os.environ)
  env.setdefault("JAX_PLATFORMS", "cpu")
  return env


def run_cli(config: str, workdir: Path, *flags: str, module: str = "rnn_research.sweep",
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
  args = [sys.executable, "-m", module, f"--config={config}", f"--workdir={workdir}", *flags]
  return subprocess.run(args, cwd=ROOT, env=env or _env(), capture_output=True, text=True,
                        timeout=TIMEOUT)


def checked(proc: subprocess.CompletedProcess, code: int = 0) -> subprocess.CompletedProcess:
  assert proc.returncode == code, (
      f"exit {proc.returncode} (expected {code})\nstdout:\n{proc.stdout[-4000:]}\n"
      f"stderr:\n{proc.stderr[-4000:]}")
  return proc


def summary(text: str) -> dict[str, int]:
  found = SUMMARY.findall(text)
  assert len(found) == 1, text
  return dict(zip(("completed", "diverged", "failed", "skipped"), map(int, found[0])))


def write_sweep(directory: Path, text: str = SWEEP_FILE, name: str = "tiny_sweep.py") -> str:
  path = directory / name
  path.write_text(textwrap.dedent(text))
  return str(path)


def steps_on_disk(workdir: Path) -> list[int]:
  ckpts = workdir / "checkpoints"
  return sorted(int(p.name) for p in ckpts.iterdir() if p.name.isdigit()) if ckpts.is_dir() else []


def mtimes(directory: Path) -> dict[str, int]:
  return {str(p.relative_to(directory)): p.stat().st_mtime_ns
          for p in sorted(directory.rglob("*")) if p.is_file()}


def base_config():
  config = default.for_task("kalman", cell="gru", hidden_size=4, steps=4, batch_size=4)
  config.task.length = 10
  config.task.eval_size = 8
  return config


def make_sweep(members: list[dict]) -> sweep_spec.Sweep:
  return sweep_spec.Sweep("s.py", base_config(), members, sweep_spec.member_names(members), "")


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory):
  """(sweep file, sweep dir, the CLI's CompletedProcess) of the tiny sweep, trained once."""
  root = tmp_path_factory.mktemp("sweep")
  path = write_sweep(root)
  workdir = root / "runs"
  # An interrupted member: trained to step 2 of 4 in its own directory, then "preempted".
  swp = sweep_spec.load(path)
  i = swp.names.index(RESUMED)
  config = swp.config(i)
  config.train.steps = 2  # only train.steps may differ when a run resumes
  train.train_and_evaluate(config, str(workdir / RESUMED))
  write_status(str(workdir / RESUMED), state="preempted")
  own_cache = {k: v for k, v in _env().items() if k != "JAX_COMPILATION_CACHE_DIR"}
  # seeds_mode=auto: processes on CPU, compiling through the sweep's own cache
  proc = checked(run_cli(path, workdir, "--parallel=2", env=own_cache))
  return path, workdir, proc


# ------------------------------------------------------------------------------------- plan


def job_dirs(job: sweep.Job) -> list[str]:
  """The run directories a job's command trains, one per member name of the job."""
  workdir = next(a for a in job.argv if a.startswith("--workdir=")).split("=", 1)[1]
  seeds = [a for a in job.argv if a.startswith("--seeds=")]
  if not seeds:
    return [workdir]
  return [workdir.replace("{seed}", s) for s in seeds[0].split("=", 1)[1].split(",")]


def assert_jobs_train_their_members(jobs: list[sweep.Job], workdir: Path) -> None:
  for job in jobs:
    assert job_dirs(job) == [str(workdir / n) for n in job.names], job


def test_plan_groups_seeds_only_with_vmap(tmp_path):
  swp = make_sweep(sweep_spec.product({"model.cell": ["rnn", "lstm"]}, sweep_spec.seeds(3)))
  jobs, skipped = sweep.plan(swp, str(tmp_path), list(range(6)), vmap_seeds=True)
  assert skipped == []
  assert [j.names for j in jobs] == [swp.names[:3], swp.names[3:]]
  for job, cell in zip(jobs, ["rnn", "lstm"]):
    assert job.argv[:3] == [sys.executable, "-m", "rnn_research.main"]
    assert f"--config.model.cell={cell}" in job.argv and "--seeds=0,1,2" in job.argv
    assert not any(a.startswith("--config.train.seed") for a in job.argv)
  assert_jobs_train_their_members(jobs, tmp_path)

  jobs, _ = sweep.plan(swp, str(tmp_path), list(range(6)), vmap_seeds=False)
  assert [j.names for j in jobs] == [[n] for n in swp.names]
  assert not any(a.startswith("--seeds") for j in jobs for a in j.argv)
  assert_jobs_train_their_members(jobs, tmp_path)
  assert jobs[4].argv[3:] == ["--config=s.py", "--config.model.cell=lstm",
                              "--config.train.seed=1", f"--workdir={tmp_path}/cell=lstm,seed=1"]


def test_plan_groups_only_members_at_the_same_checkpoint_step(tmp_path):
  swp = make_sweep(sweep_spec.product({"model.cell": ["rnn", "lstm"]}, sweep_spec.seeds(3)))
  # rnn seed 1 has a checkpoint at step 2, the other rnn seeds none; lstm seeds all at 2.
  for name in ("cell=rnn,seed=1", "cell=lstm,seed=0", "cell=lstm,seed=1", "cell=lstm,seed=2"):
    (tmp_path / name / "checkpoints" / "2").mkdir(parents=True)
  jobs, _ = sweep.plan(swp, str(tmp_path), list(range(6)), vmap_seeds=True)
  groups = sorted(sorted(j.names) for j in jobs)
  assert groups == [["cell=lstm,seed=0", "cell=lstm,seed=1", "cell=lstm,seed=2"],
                    ["cell=rnn,seed=0", "cell=rnn,seed=2"], ["cell=rnn,seed=1"]]
  rnn = next(j for j in jobs if j.names == ["cell=rnn,seed=0", "cell=rnn,seed=2"])
  assert "--seeds=0,2" in rnn.argv
  assert_jobs_train_their_members(jobs, tmp_path)


def test_plan_never_groups_members_that_differ_beyond_the_seed(tmp_path):
  members = [{"train.seed": 0, "model.hidden_size": 4}, {"train.seed": 1, "model.hidden_size": 4},
             {"train.seed": 2, "model.hidden_size": 8}, {"train.seed": 3, "train.steps": 6}]
  swp = make_sweep(members)
  jobs, _ = sweep.plan(swp, str(tmp_path), list(range(4)), vmap_seeds=True)
  assert sorted(j.names for j in jobs) == sorted([swp.names[:2], [swp.names[2]], [swp.names[3]]])
  assert_jobs_train_their_members(jobs, tmp_path)


@pytest.mark.parametrize("state,step,done", [
    ("completed", 4, True), ("completed", 2, False), ("diverged", 1, True),
    ("preempted", 2, False), ("failed", 2, False), ("running", 3, False), (None, None, False)])
def test_plan_skips_members_whose_outcome_is_known(tmp_path, state, step, done):
  swp = make_sweep(sweep_spec.seeds(2))
  if state is not None:
    write_status(str(tmp_path / "seed=1"), state=state, step=step)
  jobs, skipped = sweep.plan(swp, str(tmp_path), [0, 1], vmap_seeds=False)
  assert skipped == (["seed=1"] if done else [])
  assert [n for j in jobs for n in j.names] == (["seed=0"] if done else ["seed=0", "seed=1"])


def test_plan_only_plans_the_given_indices(tmp_path):
  swp = make_sweep(sweep_spec.seeds(4))
  jobs, skipped = sweep.plan(swp, str(tmp_path), [1, 3], vmap_seeds=True)
  assert skipped == [] and [j.names for j in jobs] == [["seed=1", "seed=3"]]
  assert "--seeds=1,3" in jobs[0].argv


@pytest.mark.parametrize("members", [
    [{}] + sweep_spec.seeds(2, start=1),
    [{"train.seed": 0, "model.cell": "rnn"}, {"model.cell": "rnn", "train.seed": 1}],
])
def test_plan_vmapped_group_trains_each_member_in_its_own_dir(tmp_path, members):
  swp = make_sweep(members)
  jobs, _ = sweep.plan(swp, str(tmp_path), list(range(len(members))), vmap_seeds=True)
  assert sorted(n for j in jobs for n in j.names) == sorted(swp.names)
  assert_jobs_train_their_members(jobs, tmp_path)


# -------------------------------------------------------------- child_env, cores, outcome


def test_child_env_limits_threads(monkeypatch):
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
  monkeypatch.setenv("PYTHONPATH", "/elsewhere")
  before = dict(os.environ)
  one, two = launch.child_env(1), launch.child_env(2)
  assert dict(os.environ) == before  # this process' environment is left alone
  for var in launch.THREAD_VARS:
    assert one[var] == "1" and two[var] == "2"
  assert one["XLA_FLAGS"].split() == ["--xla_force_host_platform_device_count=2",
                                      "--xla_cpu_multi_thread_eigen=false"]
  assert two["XLA_FLAGS"] == "--xla_force_host_platform_device_count=2"
  for env in (one, two):
    paths = env["PYTHONPATH"].split(os.pathsep)
    assert str(ROOT) in paths and "/elsewhere" in paths
  monkeypatch.delenv("XLA_FLAGS")
  assert launch.child_env(1)["XLA_FLAGS"] == "--xla_cpu_multi_thread_eigen=false"


def test_child_env_compiles_through_the_sweeps_cache_unless_one_is_named(monkeypatch, tmp_path):
  monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
  assert "JAX_COMPILATION_CACHE_DIR" not in launch.child_env(1)  # no workdir: no cache
  env = launch.child_env(1, str(tmp_path))
  assert env["JAX_COMPILATION_CACHE_DIR"] == str(tmp_path / launch.CACHE_DIR)
  assert env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] == "0"
  monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", "/theirs")
  assert launch.child_env(1, str(tmp_path))["JAX_COMPILATION_CACHE_DIR"] == "/theirs"


def test_core_slices_partition_this_machines_cores():
  cpus = sorted(os.sched_getaffinity(0))
  assert launch.core_slices(1) == [cpus]
  slices = launch.core_slices(2)
  assert len(slices) == 2
  if len(cpus) >= 2:
    flat = [c for s in slices for c in s]
    assert len(flat) == len(set(flat))  # disjoint
    assert set(flat) <= set(cpus) and len(slices[0]) == len(slices[1]) == len(cpus) // 2
    if len(cpus) % 2 == 0:
      assert sorted(flat) == cpus  # a partition


@pytest.mark.parametrize("cpus,parallel,expected", [
    ({2, 3, 6, 7}, 2, [[2, 3], [6, 7]]),
    ({2, 3, 6, 7}, 4, [[2], [3], [6], [7]]),
    ({0, 1, 2, 3, 4}, 2, [[0, 1], [2, 3]]),
    ({0, 1}, 3, [[0], [1], [0]]),  # more slots than cores: shared round-robin
])
def test_core_slices_split_the_affinity_set(monkeypatch, cpus, parallel, expected):
  monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(cpus))
  assert launch.core_slices(parallel) == expected


def test_run_local_pins_each_job_to_its_cores(tmp_path):
  probe = ("import os, sys, time; time.sleep(0.5); "
           "print(sorted(os.sched_getaffinity(0)), os.environ['OMP_NUM_THREADS']); "
           "sys.exit(int(sys.argv[1]))")
  jobs = [launch.Job([f"job{k}"], [sys.executable, "-c", probe, str(code)])
          for k, code in enumerate([0, 3])]
  reported = {}
  assert launch.run_local(jobs, str(tmp_path), 2,
                          lambda job, rc, s, running: reported.update({job.names[0]: rc})) is None
  assert reported == {"job0": 0, "job1": 3}
  slices = launch.core_slices(2)
  seen = []
  for k in range(2):
    cores, threads = (tmp_path / "logs" / f"job{k}.log").read_text().rsplit(" ", 1)
    seen.append(json.loads(cores))
    assert int(threads) == len(seen[-1])
  assert sorted(seen) == sorted(slices)


@pytest.mark.parametrize("state,code,expected", [
    ("completed", 0, "completed"), ("preempted", 0, "preempted"), ("diverged", 3, "diverged"),
    ("completed", 3, "completed"),  # a vmapped group with another seed diverged exits 3
    ("diverged", 0, "diverged"),
    ("running", 0, "failed"), ("failed", 0, "failed"), (None, 0, "failed"),
    ("completed", 1, "failed"), ("completed", 2, "failed"), ("running", -9, "failed"),
    ("diverged", 2, "failed")])
def test_outcome(tmp_path, state, code, expected):
  if state is not None:
    write_status(str(tmp_path / "m"), state=state, step=3)
  got, status = sweep.outcome(str(tmp_path), "m", code)
  assert got == expected
  assert status == read_status(str(tmp_path / "m"))


# ---------------------------------------------------------------------------- dry runs, input


@pytest.mark.slow  # runs the sweep CLI as a process
def test_dry_run_lists_members_and_commands_writes_nothing(tmp_path):
  path = write_sweep(tmp_path)
  workdir = tmp_path / "runs"
  proc = checked(run_cli(path, workdir, "--dry_run", "--seeds_mode=processes"))
  lines = proc.stdout.splitlines()
  assert "4 member(s), 0 already done, 4 job(s)" in proc.stdout
  for name in NAMES:
    assert any(line.split() and line.split()[0] == name for line in lines), name
  commands = [line for line in lines if line.strip().startswith("$ ")]
  assert len(commands) == 4
  for command, name in zip(commands, NAMES):
    assert " -m rnn_research.main " in command and f"--config={path}" in command
    assert command.endswith(f"--workdir={workdir}/{name}")
  assert "--config.model.recurrent_scale=10000.0" in commands[2]
  assert not workdir.exists()


@pytest.mark.slow  # runs the sweep CLI as a process
def test_declaration_error_lists_every_bad_member_exit_2(tmp_path):
  path = write_sweep(tmp_path, SWEEP_FILE.replace(
      'sweep("model.recurrent_scale", [1.0, 10000.0])',
      '[{"model.recurrent_scale": 1.0}, {"model.cel": "rnn"}, {"model.cell": "nope"}, '
      '{"model.recurrent_scale": "big"}, {"model.recurrent_scale": 10000.0}]'))
  workdir = tmp_path / "runs"
  proc = checked(run_cli(path, workdir), 2)
  assert proc.stderr.startswith("bad input:")
  # 3 bad members x 2 seeds
  assert "6 of 10 member(s) are invalid, nothing was run" in proc.stderr
  for name in ("cel=rnn,seed=0", "cel=rnn,seed=1", "cell=nope,seed=0", "cell=nope,seed=1",
               "recurrent_scale=big,seed=0", "recurrent_scale=big,seed=1"):
    assert f"({name})" in proc.stderr, name
  assert "(recurrent_scale=1,seed=0)" not in proc.stderr
  assert not workdir.exists()


def test_only_selects_members_by_regex(tmp_path):
  path = write_sweep(tmp_path)
  lines: list[str] = []
  result = sweep.run_sweep(path, str(tmp_path / "runs"), dry_run=True, only=r"seed=1$",
                           seeds_mode="processes", out=lines.append)
  assert result == {"planned": 2}
  text = "\n".join(lines)
  assert "2 member(s)" in text
  commands = [line for line in lines if line.strip().startswith("$ ")]
  assert [c.rsplit("/", 1)[1] for c in commands] == [GOOD[1], BAD[1]]
  assert GOOD[0] not in text and BAD[0] not in text
  assert not (tmp_path / "runs").exists()


@pytest.mark.slow  # runs the sweep CLI as a process
def test_only_matching_nothing_exits_2_listing_members(tmp_path):
  path = write_sweep(tmp_path)
  proc = checked(run_cli(path, tmp_path / "runs", "--only=cell=lstm"), 2)
  assert "matches no member" in proc.stderr
  for name in NAMES:
    assert name in proc.stderr
  assert not (tmp_path / "runs").exists()


def test_bad_only_regex_and_parallel_are_bad_input(tmp_path):
  path = write_sweep(tmp_path)
  with pytest.raises(ValueError, match="not a regular expression"):
    sweep.run_sweep(path, str(tmp_path), only="(", dry_run=True, seeds_mode="processes")
  with pytest.raises(ValueError, match="--parallel must be >= 1"):
    sweep.run_sweep(path, str(tmp_path), parallel=0, dry_run=True, seeds_mode="processes")


# ------------------------------------------------------------------------------- a real sweep


@pytest.mark.slow  # the tiny_sweep tests train a whole sweep through its CLI
def test_sweep_trains_every_member(tiny_sweep):
  path, workdir, proc = tiny_sweep
  assert summary(proc.stdout) == {"completed": 2, "diverged": 2, "failed": 0, "skipped": 0}
  for name in NAMES:  # one progress line per member
    assert re.search(rf"^\[\d/4\] {re.escape(name)}: (completed|diverged) in", proc.stdout,
                     re.MULTILINE), name
  manifest = json.loads((workdir / "sweep.json").read_text())
  assert manifest["config"] == path
  assert [m["name"] for m in manifest["members"]] == NAMES
  assert manifest["members"][2]["overrides"] == {"model.recurrent_scale": 10000.0,
                                                 "train.seed": 0}
  assert manifest["selected"] == NAMES
  assert manifest["doc"].startswith("A tiny test sweep")
  # seeds_mode=auto runs seeds as separate processes on the CPU: one job (log) per member
  assert sorted(p.name for p in (workdir / "logs").iterdir()) == sorted(f"{n}.log" for n in NAMES)
  assert any((workdir / launch.CACHE_DIR).iterdir())  # the members compiled through its cache

  metrics = []
  for seed, name in enumerate(GOOD):
    run = workdir / name
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["seed"] == seed and config["model"]["recurrent_scale"] == 1.0
    assert config["train"]["steps"] == 4
    status = read_status(str(run))
    assert status["state"] == "completed" and status["step"] == 4, status
    assert all(math.isfinite(v) for v in status["metrics"].values())
    metrics.append(status["metrics"])
    assert list(run.glob("events.out.tfevents.*"))
    assert steps_on_disk(run) == [2, 4]
    scalars = read_scalars(str(run))
    assert [s for s, _ in scalars["train/loss"]] == [1, 2, 3, 4]
    assert scalars["eval/loss"][-1] == (4, pytest.approx(status["metrics"]["loss"], rel=1e-6))
  assert metrics[0] != metrics[1]  # the seed override reached the runs

  for seed, name in enumerate(BAD):
    status = read_status(str(workdir / name))
    assert status["state"] == "diverged", status
    assert f"diverged at step {status['step']}" in status["message"]
    assert status["step"] < 4
    config = json.loads((workdir / name / "config.json").read_text())
    assert config["model"]["recurrent_scale"] == 10000.0 and config["train"]["seed"] == seed


@pytest.mark.slow
def test_sweep_resumes_an_interrupted_member_from_its_checkpoint(tiny_sweep):
  _, workdir, _ = tiny_sweep
  run = workdir / RESUMED
  assert "resumed from step 2" in (workdir / "logs" / f"{RESUMED}.log").read_text()
  for name in NAMES:
    if name != RESUMED:
      assert "resumed from step" not in (workdir / "logs" / f"{name}.log").read_text()
  status = read_status(str(run))
  assert status["state"] == "completed" and status["step"] == 4
  # Two event files: the interrupted run's (steps 1-2) and the resumed run's (3-4 only, so
  # nothing before the checkpoint was trained again).
  logged = []
  for k, event_file in enumerate(sorted(run.glob("events.out.tfevents.*"),
                                        key=lambda p: p.stat().st_mtime_ns)):
    alone = workdir.parent / f"events_{k}"
    alone.mkdir(exist_ok=True)
    shutil.copy(event_file, alone)
    logged.append([s for s, _ in read_scalars(str(alone))["train/loss"]])
  assert logged == [[1, 2], [3, 4]]


@pytest.mark.slow
def test_rerun_trains_nothing(tiny_sweep):
  path, workdir, _ = tiny_sweep
  before = {name: mtimes(workdir / name) for name in NAMES}
  logs = mtimes(workdir / "logs")
  proc = checked(run_cli(path, workdir, "--parallel=2"))
  assert summary(proc.stdout) == {"completed": 2, "diverged": 2, "failed": 0, "skipped": 4}
  assert f"skipping 4 member(s) already done: {', '.join(NAMES)}" in proc.stdout
  assert {name: mtimes(workdir / name) for name in NAMES} == before
  assert mtimes(workdir / "logs") == logs  # no job was started
  for files in before.values():
    assert any(f.startswith("events.out.tfevents") for f in files)


@pytest.mark.slow
def test_a_failing_member_is_counted_and_the_sweep_goes_on(tiny_sweep, tmp_path):
  path, workdir, _ = tiny_sweep
  copy = tmp_path / "runs"
  shutil.copytree(workdir, copy)
  # The first member's checkpoints are a file, not a directory: main fails (exit 1). (A run
  # of another config would stop the whole sweep first: tests/test_sweep_trust.py.)
  # The second member lost its status: it resumes at its last step and completes again.
  failing, rerun = copy / GOOD[0], copy / GOOD[1]
  shutil.rmtree(failing / "checkpoints")
  (failing / "checkpoints").write_text("not a directory")
  (failing / "status.json").unlink()
  (rerun / "status.json").unlink()
  proc = checked(run_cli(path, copy, "--parallel=1"), 1)
  assert summary(proc.stdout) == {"completed": 1, "diverged": 2, "failed": 1, "skipped": 2}
  line = next(l for l in proc.stdout.splitlines() if f"] {GOOD[0]}: " in l)
  assert ": failed in" in line and "exit code 1" in line and "FileExistsError" in line
  assert "FileExistsError" in (copy / "logs" / f"{GOOD[0]}.log").read_text()
  assert read_status(str(failing))["state"] == "failed"
  assert read_status(str(rerun))["state"] == "completed"
  # the failure came first (--parallel=1, member order) and the sweep went on after it
  order = [l.split("] ", 1)[1].split(":")[0] for l in proc.stdout.splitlines()
           if l.startswith("[")]
  assert order == GOOD


@pytest.mark.slow
def test_vmapped_seeds_run_as_one_job_with_the_same_metrics(tiny_sweep, tmp_path, monkeypatch):
  path, workdir, _ = tiny_sweep
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  lines: list[str] = []
  sweep.run_sweep(path, str(tmp_path / "dry"), dry_run=True, seeds_mode="vmap",
                  out=lines.append)
  commands = [line for line in lines if line.strip().startswith("$ ")]
  assert len(commands) == 2  # one per member, both seeds in it
  assert all(c.endswith("--seeds=0,1") and "seed={seed}" in c for c in commands)
  assert not any("--config.train.seed" in c for c in commands)

  vmapped = tmp_path / "vmapped"
  lines.clear()
  counts = sweep.run_sweep(path, str(vmapped), seeds_mode="vmap", only="^recurrent_scale=1,",
                           out=lines.append)
  assert counts == {"completed": 2, "diverged": 0, "failed": 0, "preempted": 0, "skipped": 0}, lines
  assert [p.name for p in (vmapped / "logs").iterdir()] == [f"{GOOD[0]}.log"]  # one job
  for name in GOOD:
    got, want = read_status(str(vmapped / name)), read_status(str(workdir / name))
    assert got["state"] == "completed" and got["step"] == 4
    assert got["metrics"].keys() == want["metrics"].keys()
    for key, value in want["metrics"].items():
      assert got["metrics"][key] == pytest.approx(value, rel=1e-4), key
    assert steps_on_disk(vmapped / name) == [2, 4]
    curve = [v for _, v in read_scalars(str(vmapped / name))["train/loss"]]
    reference = [v for _, v in read_scalars(str(workdir / name))["train/loss"]]
    np.testing.assert_allclose(curve, reference, rtol=1e-4)


@pytest.mark.slow
def test_ray_backend_runs_the_sweep(tiny_sweep, tmp_path, monkeypatch):
  ray = pytest.importorskip("ray")
  _, workdir, _ = tiny_sweep
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  monkeypatch.chdir(tmp_path)  # relative paths: Ray's workers must resolve them from here
  monkeypatch.setenv("RAY_worker_niceness", "0")  # Ray's 15 starves members on a busy machine
  write_sweep(tmp_path)
  ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
  try:
    lines: list[str] = []
    counts = sweep.run_sweep("tiny_sweep.py", "ray_runs", parallel=2, seeds_mode="processes",
                             only="^recurrent_scale=1,", backend="ray", ray_address=None,
                             out=lines.append)
  finally:
    ray.shutdown()
  assert counts == {"completed": 2, "diverged": 0, "failed": 0, "preempted": 0, "skipped": 0}, lines
  for name in GOOD:
    status = read_status(str(tmp_path / "ray_runs" / name))
    assert status["state"] == "completed" and status["step"] == 4
    want = read_status(str(workdir / name))["metrics"]
    assert status["metrics"] == pytest.approx(want, rel=1e-5)
    assert steps_on_disk(tmp_path / "ray_runs" / name) == [2, 4]
    assert (tmp_path / "ray_runs" / "logs" / f"{name}.log").is_file()


@pytest.mark.slow
def test_compare_the_sweep(tiny_sweep):
  _, workdir, _ = tiny_sweep
  proc = checked(subprocess.run(
      [sys.executable, "-m", "rnn_research.compare", str(workdir), "--metric=eval/loss"],
      cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=TIMEOUT))
  rows = [[c.strip() for c in line.strip("|").split("|")]
          for line in proc.stdout.splitlines() if line.startswith("|")]
  head, body = rows[0], rows[2:]
  table = {row[0]: dict(zip(head, row)) for row in body}
  assert set(table) == {"recurrent_scale=1", "recurrent_scale=10000"}
  good, bad = table["recurrent_scale=1"], table["recurrent_scale=10000"]
  assert good["runs"] == bad["runs"] == "2"
  assert good["diverged"] == "0/2" and bad["diverged"] == "2/2"
  final = "final mean [95% CI]"
  assert bad[final] == "–" and good[final] != "–"
  assert body[0][0] == "recurrent_scale=1"  # ranked: the group with a final value first
  assert (workdir / "compare.png").stat().st_size > 0
  assert (workdir / "compare_final.png").stat().st_size > 0
  assert (workdir / "compare.md").read_text().startswith(proc.stdout.split("\n\n")[0])
