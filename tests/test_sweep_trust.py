"""Sweeps you can trust: a rerun after the sweep file changed (changed members) or after the code
changed (stale members), signals that stop
every member, `--config.<key>=<value>` overrides for every member, dry-run commands that paste
into a shell, and the progress lines.

The planning, the checks and the launcher's signal forwarding run in-process (the launcher's
jobs are small Python processes); the tests marked slow run real sweeps through the CLI.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from rnn_research.experiments import launch, sweep_changes, sweep_runner, sweep_spec
from rnn_research.training import provenance
from rnn_research.training.status import read_status, write_status

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 240
SWEEP_FILE = '''
"""Two seeds of a tiny GRU on kalman."""
from configs import default
from rnn_research.experiments.sweep_spec import seeds


def get_config(arg=None):
  config = default.for_task("kalman", cell="gru", hidden_size=4, steps=4, batch_size=4)
  config.task.length = 10
  config.task.eval_size = 8
  t = config.train
  t.log_every, t.checkpoint_every, t.eval_every, t.diagnostics_every = 1, 2, 2, 4
  t.learning_rate = {lr}
  return config


def get_sweep():
  return seeds(2)
'''
NAMES = ["seed=0", "seed=1"]
SUMMARY = re.compile(r"^sweep \S+: (\d+) completed, (\d+) diverged, (\d+) failed(?:, (\d+) "
                     r"preempted)? \((\d+) skipped as done\)", re.MULTILINE)


def write_sweep(directory: Path, lr: float = 1e-3) -> str:
  path = directory / "two_seeds.py"
  path.write_text(textwrap.dedent(SWEEP_FILE.format(lr=lr)))
  return str(path)


def fake_runs(swp: sweep_spec.Sweep, workdir: Path, steps: int = 4) -> None:
  """Each member's directory as a completed run of `swp` under the current code writes it
  (config.json, status)."""
  for i, name in enumerate(swp.names):
    config = swp.config(i).to_dict()
    config["train"]["steps"] = steps
    (workdir / name).mkdir(parents=True)
    (workdir / name / "config.json").write_text(json.dumps(config, sort_keys=True))
    write_status(str(workdir / name), state="completed", step=steps, metrics={"loss": 0.5},
                 code=[provenance.code_fingerprint()], commits=["abc1234"])


def tree(directory: Path) -> dict[str, int]:
  return {str(p.relative_to(directory)): p.stat().st_mtime_ns
          for p in sorted(directory.rglob("*")) if p.is_file()}


def cli(*args: str) -> list[str]:
  return [sys.executable, "-m", "rnn_research.sweep", *args]


def env() -> dict[str, str]:
  return {**os.environ, "JAX_PLATFORMS": "cpu"}


def checked(proc: subprocess.CompletedProcess, code: int = 0) -> subprocess.CompletedProcess:
  assert proc.returncode == code, (f"exit {proc.returncode} (expected {code})\nstdout:\n"
                                   f"{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}")
  return proc


def run(*args: str, code: int = 0) -> subprocess.CompletedProcess:
  return checked(subprocess.run(cli(*args), cwd=ROOT, env=env(), capture_output=True,
                                text=True, timeout=TIMEOUT), code)


# ------------------------------------------------------------------------- stale members


def test_changed_finds_members_run_with_another_config(tmp_path):
  (tmp_path / "old").mkdir()
  old = sweep_spec.load(write_sweep(tmp_path / "old", lr=1e-3))
  workdir = tmp_path / "runs"
  fake_runs(old, workdir)
  new = sweep_spec.load(write_sweep(tmp_path, lr=2e-3))
  assert sweep_changes.changed(old, str(workdir), [0, 1]) == {}
  assert sweep_changes.changed(new, str(workdir), [0, 1]) == {
      0: ["train.learning_rate: 0.001 -> 0.002"], 1: ["train.learning_rate: 0.001 -> 0.002"]}
  assert list(sweep_changes.changed(new, str(workdir), [1])) == [1]  # only those asked about
  # train.steps may change (main extends a run); a member that never ran has nothing stale
  longer = sweep_spec.with_overrides(old, ["train.steps=40"])
  assert sweep_changes.changed(longer, str(workdir), [0, 1]) == {}
  (workdir / NAMES[1] / "config.json").unlink()
  assert list(sweep_changes.changed(new, str(workdir), [0, 1])) == [0]
  smoke = sweep_spec.with_overrides(old, ["model.hidden_size=8"])
  assert sweep_changes.changed(smoke, str(workdir), [0]) == {0: ["model.hidden_size: 4 -> 8"]}


def refusals(path: str, workdir: Path) -> list[str]:
  """The SweepError messages of running the sweep, and of its dry run."""
  messages = []
  for dry_run in (False, True):
    with pytest.raises(sweep_spec.SweepError) as err:
      sweep_runner.run_sweep(path, str(workdir), seeds_mode="processes", dry_run=dry_run,
                             out=lambda line: None)
    messages.append(str(err.value))
  return messages


def test_run_sweep_refuses_changed_members_and_changes_nothing(tmp_path):
  (tmp_path / "old").mkdir()
  workdir = tmp_path / "runs"
  fake_runs(sweep_spec.load(write_sweep(tmp_path / "old", lr=1e-3)), workdir)
  before = tree(workdir)
  path = write_sweep(tmp_path, lr=2e-3)
  for message in refusals(path, workdir):
    assert message.startswith(f"2 member(s) in {workdir} ran with another config than {path}")
    for name in NAMES:
      assert f"\n  {name}: train.learning_rate: 0.001 -> 0.002\n" in message + "\n"
    assert "--rerun_changed" in message and f"{workdir}.replaced-<time>/" in message
  assert tree(workdir) == before  # no sweep.json, no log, nothing moved
  assert sorted(p.name for p in tmp_path.iterdir()) == ["old", "runs", "two_seeds.py"]


def test_dry_run_with_rerun_changed_plans_them_afresh_and_moves_nothing(tmp_path):
  (tmp_path / "old").mkdir()
  workdir = tmp_path / "runs"
  fake_runs(sweep_spec.load(write_sweep(tmp_path / "old", lr=1e-3)), workdir)
  before = tree(workdir)
  lines: list[str] = []
  result = sweep_runner.run_sweep(write_sweep(tmp_path, lr=2e-3), str(workdir), dry_run=True,
                                  rerun_changed=True, only="seed=1", seeds_mode="processes",
                                  out=lines.append)
  assert result == {"planned": 1}
  assert "1 member(s), 0 already done, 1 job(s) to run" in lines[0]
  assert any(l.startswith("  seed=1 ") and "(changed" in l for l in lines)
  assert tree(workdir) == before


def stale_runs_of(tmp_path: Path) -> tuple[str, Path]:
  """(sweep file, workdir): two completed members, seed=0 trained under other code at 1111111
  (then resumed under the current code), seed=1 before code was recorded."""
  path, workdir = write_sweep(tmp_path), tmp_path / "runs"
  fake_runs(sweep_spec.load(path), workdir)
  write_status(str(workdir / NAMES[0]), code=["0123456789ab", provenance.code_fingerprint()],
               commits=["1111111", "abc1234"])
  status = read_status(str(workdir / NAMES[1]))
  del status["code"], status["commits"]
  (workdir / NAMES[1] / "status.json").write_text(json.dumps(status))
  return path, workdir


def test_stale_finds_members_trained_under_other_code(tmp_path):
  path, workdir = stale_runs_of(tmp_path)
  swp, code = sweep_spec.load(path), provenance.code_fingerprint()
  assert sweep_changes.stale(swp, str(workdir), [0, 1], code) == {
      0: "1111111, abc1234", 1: "unrecorded"}
  assert sweep_changes.stale(swp, str(workdir), [1], code) == {1: "unrecorded"}
  assert sweep_changes.stale(swp, str(workdir), [0, 1], "0123456789ab") == {
      0: "1111111, abc1234", 1: "unrecorded"}  # code lists two: not trained under it only
  fake_runs(swp, tmp_path / "fresh")
  (tmp_path / "fresh" / NAMES[1] / "status.json").unlink()  # never ran: nothing stale
  assert sweep_changes.stale(swp, str(tmp_path / "fresh"), [0, 1], code) == {}


def test_run_sweep_refuses_stale_members_and_changes_nothing(tmp_path):
  path, workdir = stale_runs_of(tmp_path)
  before = tree(workdir)
  for message in refusals(path, workdir):
    assert message.startswith(f"2 member(s) in {workdir} trained under other code than ")
    assert f"(fingerprint {provenance.code_fingerprint()})" in message
    assert f"\n  {NAMES[0]}: trained at 1111111, abc1234\n  {NAMES[1]}: trained at unrecorded\n" \
        in message
    assert "--rerun_stale" in message and "--allow_stale" in message
  with pytest.raises(ValueError, match="one of --rerun_stale .* and --allow_stale"):
    sweep_runner.run_sweep(path, str(workdir), rerun_stale=True, allow_stale=True)
  assert tree(workdir) == before  # no sweep.json, no log, nothing moved


def test_allow_stale_keeps_them_and_rerun_stale_trains_them_afresh(tmp_path, monkeypatch):
  path, workdir = stale_runs_of(tmp_path)
  before = tree(workdir)
  lines: list[str] = []
  kept = sweep_runner.run_sweep(path, str(workdir), dry_run=True, allow_stale=True,
                                seeds_mode="processes", out=lines.append)
  assert kept == {"planned": 0} and "2 member(s), 2 already done, 0 job(s)" in lines[0]
  lines.clear()
  afresh = sweep_runner.run_sweep(path, str(workdir), dry_run=True, rerun_stale=True,
                                  seeds_mode="processes", out=lines.append)
  assert afresh == {"planned": 2} and "2 member(s), 0 already done, 2 job(s)" in lines[0]
  assert sum("(stale: its old run would be moved aside)" in l for l in lines) == 2
  assert tree(workdir) == before  # dry runs move nothing
  launched = []  # what the launcher gets; nothing trains here
  monkeypatch.setattr(sweep_runner, "_run", lambda jobs, *rest: launched.extend(jobs) or {})
  sweep_runner.run_sweep(path, str(workdir), rerun_stale=True, only="seed=1",
                         seeds_mode="processes", out=lambda line: None)
  [moved] = tmp_path.glob("runs.replaced-*")
  assert sorted(p.name for p in moved.iterdir()) == [NAMES[1]]  # only the selected member
  assert not (workdir / NAMES[1]).exists() and (workdir / NAMES[0]).exists()
  assert [job.names for job in launched] == [[NAMES[1]]]


@pytest.mark.slow
def test_cli_takes_the_stale_flags(tmp_path):
  path, workdir = stale_runs_of(tmp_path)
  before = tree(workdir)
  base = (f"--config={path}", f"--workdir={workdir}", "--dry_run")
  refused = run(*base, code=2)
  assert refused.stderr.startswith(f"bad input: 2 member(s) in {workdir} trained under other ")
  assert "2 already done, 0 job(s)" in run(*base, "--allow_stale").stdout
  both = run(*base, "--rerun_stale", "--allow_stale", code=2)  # both flags reach run_sweep
  assert both.stderr.startswith("bad input: give one of --rerun_stale")
  assert tree(workdir) == before


def test_move_aside_puts_old_runs_beside_the_sweep(tmp_path):
  workdir = tmp_path / "runs"
  for name in NAMES:
    (workdir / name / "checkpoints" / "2").mkdir(parents=True)
    (workdir / name / "config.json").write_text(name)
  (workdir / "logs").mkdir()
  (workdir / "logs" / f"{NAMES[0]}.log").write_text("old log")
  moved = Path(sweep_changes.move_aside(str(workdir) + "/", [NAMES[0]]))
  assert moved.parent == tmp_path  # a sibling: outside the sweep's TensorBoard tree
  assert re.fullmatch(r"runs\.replaced-\d{8}-\d{6}", moved.name), moved.name
  assert (moved / NAMES[0] / "config.json").read_text() == NAMES[0]
  assert (moved / NAMES[0] / "checkpoints" / "2").is_dir()
  assert (moved / "logs" / f"{NAMES[0]}.log").read_text() == "old log"
  assert sorted(p.name for p in workdir.iterdir()) == ["logs", NAMES[1]]
  assert list((workdir / "logs").iterdir()) == []
  again = Path(sweep_changes.move_aside(str(workdir), [NAMES[1]]))
  assert again != moved and (again / NAMES[1] / "config.json").read_text() == NAMES[1]
  assert (moved / NAMES[0]).is_dir()  # the first move is kept


def test_move_aside_refuses_a_run_that_is_training(tmp_path):
  from rnn_research.training import lock

  workdir = tmp_path / "runs"
  for name in NAMES:
    (workdir / name).mkdir(parents=True)
  before = tree(tmp_path)
  with lock.hold(str(workdir / NAMES[1])):  # as a live `main` holds its run directory
    with pytest.raises(lock.WorkdirBusy, match="is in use by"):
      sweep_changes.move_aside(str(workdir), NAMES)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]  # nothing moved
  assert tree(tmp_path) == before


# ------------------------------------------------------------- overrides, commands, progress


def test_member_commands_carry_the_overrides_after_their_own(tmp_path):
  swp = sweep_spec.with_overrides(sweep_spec.load(write_sweep(tmp_path)),
                                  ["train.steps=20", "task.length=5"])
  for vmap in (False, True):
    jobs, _ = sweep_runner.plan(swp, str(tmp_path / "runs"), [0, 1], vmap_seeds=vmap)
    for job in jobs:
      workdir = job.argv.index(next(a for a in job.argv if a.startswith("--workdir=")))
      assert job.argv[workdir - 2:workdir] == ["--config.train.steps=20",
                                               "--config.task.length=5"]
  assert swp.config(1).train.steps == 20 and swp.config(1).task.length == 5


def test_dry_run_commands_paste_into_a_shell(tmp_path):
  spaced = tmp_path / "my sweeps"
  spaced.mkdir()
  path = write_sweep(spaced)
  workdir = spaced / "runs (v2)"
  lines: list[str] = []
  sweep_runner.run_sweep(path, str(workdir), dry_run=True, seeds_mode="vmap",
                         overrides=("task.length=5",), out=lines.append)
  swp = sweep_spec.with_overrides(sweep_spec.load(path), ["task.length=5"])
  jobs, _ = sweep_runner.plan(swp, str(workdir), [0, 1], vmap_seeds=True)
  commands = [l.strip()[2:] for l in lines if l.strip().startswith("$ ")]
  assert [shlex.split(c) for c in commands] == [j.argv for j in jobs]
  assert f"'--workdir={workdir}/seed={{seed}}'" in commands[0]
  assert not workdir.exists()


def test_progress_lines_count_running_failed_and_the_eta(tmp_path):
  for name, state in (("a", "completed"), ("b", "failed"), ("c", "completed"),
                      ("done", "completed")):
    write_status(str(tmp_path / name), state=state, step=4, metrics={"loss": 0.25})
  lines: list[str] = []
  tally = sweep_runner._Tally(str(tmp_path), ["done"], 4, 3, 2, lines.append)
  tally.report(launch.Job(["a"], []), 0, 10.0, 2)
  tally.report(launch.Job(["b"], []), 1, 50.0, 1)
  tally.report(launch.Job(["c"], []), 0, 600.0, 0)
  assert lines[0] == "[2/4] a: completed in 10 s (2 running, 0 failed, ETA 10 s)  loss=0.25"
  assert lines[1].startswith("[3/4] b: failed in 50 s (1 running, 1 failed, ETA 15 s)  exit code 1")
  assert lines[2].startswith("[4/4] c: completed in 600 s (0 running, 1 failed)  ")
  assert tally.summary(700.0, signal.SIGTERM) == (
      f"sweep {tmp_path}: 3 completed, 0 diverged, 1 failed (1 skipped as done) in 700 s; "
      "stopped by SIGTERM, rerun the same command to resume")


# ------------------------------------------------------------------------------- signals

TRAP = """
import pathlib, signal, sys, time
got = []
signal.signal(signal.SIGTERM, lambda s, f: got.append(s))
signal.signal(signal.SIGINT, lambda s, f: got.append(s))
pathlib.Path(sys.argv[1] + ".started").write_text("")
for _ in range(600):
  if len(got) >= int(sys.argv[2]):
    break
  time.sleep(0.05)
pathlib.Path(sys.argv[1] + ".got").write_text(",".join(map(str, got)))
"""


def signal_when_started(markers: list[Path], signals: list[int]) -> threading.Thread:
  """Sends `signals` to this process once every marker exists (never, if one never does)."""
  def send():
    deadline = time.time() + 60
    while not all(m.with_suffix(".started").exists() for m in markers):
      if time.time() > deadline:
        return
      time.sleep(0.05)
    for signum in signals:
      os.kill(os.getpid(), signum)
      time.sleep(0.5)
  thread = threading.Thread(target=send, daemon=True)
  thread.start()
  return thread


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_run_local_forwards_a_signal_waits_and_starts_nothing_more(tmp_path, signum):
  markers = [tmp_path / f"job{k}" for k in range(3)]
  jobs = [launch.Job([m.name], [sys.executable, "-c", TRAP, str(m), "1"]) for m in markers]
  reported = []
  before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
  thread = signal_when_started(markers[:2], [signum])
  stopped_by = launch.run_local(jobs, str(tmp_path), 2,
                                lambda job, rc, s, running: reported.append((job.names[0], rc)),
                                note=lambda line: None)
  thread.join()
  assert stopped_by == signum
  assert sorted(reported) == [("job0", 0), ("job1", 0)]  # both exited of their own accord
  forwarded = signal.SIGTERM if signum == signal.SIGHUP else signum
  for marker in markers[:2]:
    assert (marker.with_suffix(".got")).read_text() == str(int(forwarded))
  assert not markers[2].with_suffix(".started").exists()  # the third job never started
  assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_a_third_signal_kills_jobs_that_do_not_exit(tmp_path):
  marker = tmp_path / "stubborn"  # waits for 10 signals: more than the sweep sends
  jobs = [launch.Job(["stubborn"], [sys.executable, "-c", TRAP, str(marker), "10"])]
  reported, notes = [], []
  thread = signal_when_started([marker], [signal.SIGTERM] * 3)
  assert launch.run_local(jobs, str(tmp_path), 1,
                          lambda job, rc, s, running: reported.append(rc),
                          note=notes.append) == signal.SIGTERM
  thread.join()
  assert reported == [-signal.SIGKILL]
  assert len(notes) == 3 and "sent SIGKILL to 1 running job(s)" in notes[2]
  assert "a third signal kills them" in notes[0]


# ---------------------------------------------------------------------- real sweeps (slow)


def children(pid: int) -> list[int]:
  """The pids of the processes whose parent is `pid`."""
  found = []
  for stat in Path("/proc").glob("[0-9]*/stat"):
    try:
      if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
        found.append(int(stat.parent.name))
    except (OSError, IndexError, ValueError):
      pass  # exited meanwhile
  return found


def wait_for(condition, seconds: float = TIMEOUT) -> None:
  deadline = time.time() + seconds
  while not condition():
    assert time.time() < deadline, "timed out"
    time.sleep(0.2)


@pytest.mark.slow  # trains a real sweep through its CLI, then stops it
@pytest.mark.parametrize("signum,workers", [(signal.SIGTERM, "--workers"),
                                            (signal.SIGINT, "--workers"),
                                            (signal.SIGTERM, "--noworkers")])
def test_a_signal_stops_every_member_and_leaves_no_process(tmp_path, signum, workers):
  path, workdir = write_sweep(tmp_path), tmp_path / "runs"
  sweep = subprocess.Popen(cli(f"--config={path}", f"--workdir={workdir}", "--parallel=2",
                               "--seeds_mode=processes", "--config.train.steps=100000",
                               workers),
                           cwd=ROOT, env=env(), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
  try:  # both members are training (past their first checkpoint) when the signal comes
    wait_for(lambda: all(any(p.name.isdigit() for p in (workdir / n / "checkpoints").glob("*"))
                         for n in NAMES) or sweep.poll() is not None)
    assert sweep.poll() is None, sweep.communicate()
    members = children(sweep.pid)  # the members' processes, or the two workers
    assert len(members) == 2, members
    sweep.send_signal(signum)
    stdout, stderr = sweep.communicate(timeout=TIMEOUT)
  finally:
    if sweep.poll() is None:
      sweep.kill()
  assert sweep.returncode == 128 + signum, (stdout, stderr)
  assert not [p for p in members if Path(f"/proc/{p}").exists()]  # none outlived the sweep
  name = signal.Signals(signum).name
  assert f"{name}: sent {name} to 2 running job(s)" in stdout
  summary = SUMMARY.findall(stdout)
  assert len(summary) == 1 and stdout.rstrip().endswith(
      f"stopped by {name}, rerun the same command to resume"), stdout
  states = [read_status(str(workdir / n))["state"] for n in NAMES]
  assert all(state != "running" for state in states), states  # each member ended itself
  if signum == signal.SIGTERM:  # main saves and exits as preempted; a rerun resumes
    assert states == ["preempted", "preempted"] and summary[0][3] == "2"
    steps = [read_status(str(workdir / n))["step"] for n in NAMES]
    proc = run(f"--config={path}", f"--workdir={workdir}", "--parallel=2",
               "--seeds_mode=processes", f"--config.train.steps={max(steps) + 2}", workers)
    assert SUMMARY.findall(proc.stdout)[0][:3] == ("2", "0", "0")
    for n, step in zip(NAMES, steps):
      assert f"resumed from step {step}" in (workdir / "logs" / f"{n}.log").read_text()


@pytest.mark.slow  # trains a real sweep through its CLI
def test_a_changed_sweep_stops_and_rerun_changed_retrains_only_those(tmp_path):
  from rnn_research.experiments import report

  path, workdir = write_sweep(tmp_path, lr=1e-3), tmp_path / "runs"
  run(f"--config={path}", f"--workdir={workdir}", "--parallel=2", "--seeds_mode=processes")
  before = tree(workdir)
  write_sweep(tmp_path, lr=2e-3)  # the sweep file is edited
  proc = run(f"--config={path}", f"--workdir={workdir}", code=2)
  assert proc.stderr.startswith("bad input: 2 member(s) in ")
  for name in NAMES:
    assert f"  {name}: train.learning_rate: 0.001 -> 0.002" in proc.stderr
  assert "--rerun_changed" in proc.stderr and proc.stdout == ""
  assert tree(workdir) == before
  # The report reuses a sweep under the same rule: it stops, names the member, trains nothing.
  with pytest.raises(report.BadSweep, match=r"(?s)^runs: bad input: .*seed=1: train\."
                     r"learning_rate: 0.001 -> 0.002.*--rerun_changed"):
    report.run_sections(str(tmp_path), [report.Section("two", path, "eval/loss", sweep="runs")],
                        1)
  assert tree(workdir) == before

  proc = run(f"--config={path}", f"--workdir={workdir}", "--only=seed=0", "--rerun_changed")
  moved = [p for p in tmp_path.iterdir() if p.name.startswith("runs.replaced-")]
  assert len(moved) == 1 and f"to {moved[0]}" in proc.stdout
  old = moved[0] / NAMES[0]
  assert {k[len(NAMES[0]) + 1:]: v for k, v in before.items()
          if k.startswith(NAMES[0] + "/")} == tree(old)  # kept as it was
  assert json.loads((old / "config.json").read_text())["train"]["learning_rate"] == 1e-3
  new = json.loads((workdir / NAMES[0] / "config.json").read_text())
  assert new["train"]["learning_rate"] == 2e-3
  assert read_status(str(workdir / NAMES[0]))["state"] == "completed"
  assert "resumed from step" not in (workdir / "logs" / f"{NAMES[0]}.log").read_text()
  assert SUMMARY.findall(proc.stdout)[0][:3] == ("1", "0", "0")
  # seed=1 was not selected: it is still the old run, and still refused
  assert tree(workdir / NAMES[1]) == {k[len(NAMES[1]) + 1:]: v for k, v in before.items()
                                      if k.startswith(NAMES[1] + "/")}
  proc = run(f"--config={path}", f"--workdir={workdir}", code=2)
  assert f"  {NAMES[1]}: train.learning_rate" in proc.stderr and NAMES[0] + ":" not in proc.stderr


@pytest.mark.slow  # trains a real sweep through its CLI
def test_a_smoke_test_override_then_the_full_run_extends_it(tmp_path):
  path, workdir = write_sweep(tmp_path), tmp_path / "runs"
  proc = run(f"--config={path}", f"--workdir={workdir}", "--only=seed=0",
             "--config.train.steps=2", "--config.task.length=10")
  lines = proc.stdout.splitlines()
  start = next(k for k, l in enumerate(lines) if l.startswith(f"sweep {path} in {workdir}:"))
  assert lines[start].endswith(": 1 member(s), 1 to run as 1 job(s), 0 skipped as done, "
                               "parallel 1, backend local, in workers, overrides "
                               "train.steps=2 task.length=10")
  member = next(k for k, l in enumerate(lines) if l.startswith("[1/1] seed=0: completed in "))
  assert start < member and "(0 running, 0 failed)" in lines[member]
  assert json.loads((workdir / "seed=0" / "config.json").read_text())["train"]["steps"] == 2
  assert read_status(str(workdir / "seed=0"))["step"] == 2
  assert json.loads((workdir / "sweep.json").read_text())["overrides"] == [
      "train.steps=2", "task.length=10"]
  # Without the override the sweep file's train.steps (4) extends the run: not a change.
  run(f"--config={path}", f"--workdir={workdir}", "--only=seed=0")
  assert "resumed from step 2" in (workdir / "logs" / "seed=0.log").read_text()
  assert read_status(str(workdir / "seed=0"))["step"] == 4
  # An override of a key that members set is refused, naming it and them.
  proc = run(f"--config={path}", f"--workdir={workdir}", "--config.train.seed=3", code=2)
  assert proc.stderr == ("bad input: a --config.<key>=<value> override applies to every "
                         "member, but train.seed is set by member(s) seed=0, seed=1; drop the "
                         "override or that key from the sweep file\n")
