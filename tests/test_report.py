"""`rnn_research.experiments.report`: render's placeholders, run_sections' sweeps and times, and
the CLI (`rnn_research.report`).

Every sweep here is synthesized (real event files via MetricWriter, config.json, status.json,
sweep.json) and `run_sweep` is replaced by a recorder: nothing is trained. The runs record the
current code fingerprint (`code`) unless a test makes them stale.

The CLI's flags (--workdir, --parallel, --only) share names with those of rnn_research.sweep
and rnn_research.main, so importing it into absl's global FLAGS would clash with them in one
pytest process. The `report_cli` fixture therefore loads it with a FlagValues of its own; the
experiments modules define no flags (test_experiments_define_no_flags), and the other CLI
tests run it as `python -m`, as users do.
"""
from __future__ import annotations

import datetime
import functools
import importlib
import json
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest
from absl import flags

from rnn_research.experiments.stats_table import NO_BASELINE
from rnn_research.training import provenance
from rnn_research.training.metric_writer import MetricWriter
from rnn_research.training.status import read_status, write_status

ROOT = Path(__file__).resolve().parents[1]
CODE = "c0de0f1ngerp"  # what the code fingerprints to in-process (`fixed_code`)
FINGERPRINT = provenance.code_fingerprint


@pytest.fixture(autouse=True)
def fixed_code(monkeypatch):
  """The current code fingerprints to CODE: other people's edits of the tree while the tests
  run must not make these sweeps stale."""
  monkeypatch.setattr(provenance, "code_fingerprint", lambda: CODE)


@pytest.fixture(scope="module")
def report():
  """rnn_research.experiments.report (it defines no flags)."""
  from rnn_research.experiments import report
  return report


@pytest.fixture(scope="module")
def report_cli(report):
  """The entry module rnn_research.report, its flags defined in a private FlagValues."""
  private, shared = flags.FlagValues(), set(flags.FLAGS)
  with pytest.MonkeyPatch.context() as mp:
    for name in ("DEFINE_string", "DEFINE_integer", "DEFINE_bool", "mark_flags_as_required"):
      mp.setattr(flags, name, functools.partial(getattr(flags, name), flag_values=private))
    mp.setattr(flags, "FLAGS", private)
    sys.modules.pop("rnn_research.report", None)
    module = importlib.import_module("rnn_research.report")
  assert module.FLAGS is private and "workdir" in private
  assert not set(private) & (set(flags.FLAGS) - shared)  # (absl.app adds flags of its own)
  return module


def test_experiments_define_no_flags(report):
  # The entry modules (rnn_research.sweep, .report, .compare) define the CLI's flags.
  from rnn_research.experiments import compare, compare_plot, launch, sweep_runner  # noqa: F401
  assert not [m for m in flags.FLAGS.flags_by_module_dict() if ".experiments." in m]


def make_sweep(root: Path, metric: str | list[str], finals: dict[str, list[float]],
               key: str = "model.norm", start: float = 2.0, code: str = CODE) -> Path:
  """A finished sweep in `root`: per value of `key`, one completed run per final value, whose
  `metric` (each, if several) is `start` at step 0 and the final value at step 100, trained
  under `code` at commit abc1234."""
  metrics = [metric] if isinstance(metric, str) else metric
  section, field = key.split(".")
  members = []
  for value, per_seed in finals.items():
    for seed, final in enumerate(per_seed):
      name = f"{field}={value},seed={seed}"
      members.append({"name": name, "overrides": {key: value, "train.seed": seed}})
      config = {"model": {"name": "rnn", "norm": "none", "cell": "gru"},
                "task": {"name": "kalman"}, "train": {"seed": seed, "steps": 100}}
      config[section][field] = value
      run = root / name
      run.mkdir(parents=True)
      (run / "config.json").write_text(json.dumps(config))
      writer = MetricWriter(str(run))
      writer.write_scalars(0, {m: start for m in metrics})
      writer.write_scalars(100, {m: final for m in metrics})
      writer.close()
      write_status(str(run), state="completed", step=100, metrics={m: final for m in metrics},
                   code=[code], commits=["abc1234"])
  (root / "sweep.json").write_text(json.dumps({"config": "x.py", "members": members}))
  return root


TEMPLATE = """# Report
Made by `{{command}}` at {{commit}} on {{date}}; the sweeps trained for {{total_wall}}.

## a ({{wall:a}}, at {{trained:a}})
{{table:a}}

{{figure:a}}

## b ({{wall:b}}, at {{trained:b}})
{{table:b}}

{{figure:b}}
"""
# a: eval/loss (min), grouped by sweep.json's overrides; none is better than layer, though
# layer sorts (and loads) first. b: eval/accuracy (max), grouped by model.cell, threshold 0.8.
# 2 seeds a group: the t interval is mean ± 12.7 standard errors (by hand: 0.4 ± 12.706 * 0.1)
TABLE_A = f"""| group | runs | n | final mean [95% CI] | median | best | diverged | steps/s |
|---|---|---|---|---|---|---|---|
| norm=none | 2 | 2 | 0.4 [-0.8706, 1.671] | 0.4 | 0.4 ± 0.14 | 0/2 | – |
| norm=layer | 2 | 2 | 0.8 [-0.4706, 2.071] | 0.8 | 0.8 ± 0.14 | 0/2 | – |

{NO_BASELINE}"""
TABLE_B = f"""| group | runs | n | final mean [95% CI] | median | best | steps to 0.8 | diverged | steps/s |
|---|---|---|---|---|---|---|---|---|
| cell=lstm | 2 | 2 | 0.925 [0.6073, 1.243] | 0.925 | 0.925 ± 0.035 | median 100 (0 of 2 censored) | 0/2 | – |
| cell=gru | 2 | 2 | 0.8 [0.1647, 1.435] | 0.8 | 0.8 ± 0.071 | median 100 (1 of 2 censored) | 0/2 | – |

{NO_BASELINE}"""


@pytest.fixture
def two_sections(report, tmp_path):
  """(workdir, docs, sections) for sections a and b, with TEMPLATE in docs."""
  workdir, docs = tmp_path / "runs", tmp_path / "docs"
  make_sweep(workdir / "a", "eval/loss", {"layer": [0.9, 0.7], "none": [0.3, 0.5]})
  make_sweep(workdir / "b", "eval/accuracy", {"gru": [0.85, 0.75], "lstm": [0.95, 0.9]},
             key="model.cell", start=0.5)
  docs.mkdir()
  (docs / "REPORT.template.md").write_text(TEMPLATE, encoding="utf-8")
  sections = [report.Section("a", "x.py", "eval/loss", log=False),
              report.Section("b", "y.py:arg", "eval/accuracy", group_by=("model.cell",),
                             threshold=0.8, log=False)]
  return workdir, docs, sections


def git(*args: str) -> str:
  return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                        check=True).stdout.strip()


def test_render_fills_every_placeholder(report, two_sections, monkeypatch):
  workdir, docs, sections = two_sections
  (workdir / report.TIMES).write_text(json.dumps({"a": 120.0}))
  monkeypatch.chdir(ROOT)  # _commit asks git in the current directory
  text = report.render(str(workdir), str(docs), sections, "python -m rnn_research.report X")
  commit = git("rev-parse", "--short", "HEAD")
  if git("status", "--porcelain", "--untracked-files=no"):
    commit += " (with uncommitted changes)"
  assert "{{" not in text and "}}" not in text
  assert text == f"""# Report
Made by `python -m rnn_research.report X` at {commit} on {datetime.date.today().isoformat()}; \
the sweeps trained for 2.0 minutes.

## a (2.0 min, at abc1234)
{TABLE_A}

![a](report/a/compare.png)

## b (not timed, at abc1234)
{TABLE_B}

![b](report/b/compare.png)
"""
  for key in ("a", "b"):  # the figure links resolve from docs/, and compare's files are there
    assert (docs / "report" / key / "compare.png").read_bytes().startswith(b"\x89PNG")
    assert (docs / "report" / key / "compare.md").read_text(encoding="utf-8").startswith(
        TABLE_A if key == "a" else TABLE_B)
    assert not (workdir / key / "compare.md").exists()  # nothing written into the sweeps

  (workdir / report.TIMES).write_text(json.dumps({"a": 120.0, "b": 366.0}))
  text = report.render(str(workdir), str(docs), sections, "cmd")
  assert "trained for 8.1 minutes." in text  # (120 + 366) / 60, to the tenth as each sweep's
  assert "## a (2.0 min, at abc1234)" in text and "## b (6.1 min, at abc1234)" in text


def test_render_without_times_file(report, two_sections):
  workdir, docs, sections = two_sections
  text = report.render(str(workdir), str(docs), sections, "cmd")
  assert "trained for 0.0 minutes." in text
  assert "## a (not timed, " in text and "## b (not timed, " in text


def test_render_names_unfilled_placeholders(report, two_sections):
  workdir, docs, sections = two_sections
  (docs / "REPORT.template.md").write_text(TEMPLATE + "{{table:c}} by {{author}}\n")
  with pytest.raises(ValueError, match=r"nobody fills: \['author', 'table:c'\]"):
    report.render(str(workdir), str(docs), sections, "cmd")
  # A section left out of `sections` is unfilled too.
  (docs / "REPORT.template.md").write_text(TEMPLATE)
  with pytest.raises(ValueError, match=r"\['figure:b', 'table:b', 'trained:b', 'wall:b'\]"):
    report.render(str(workdir), str(docs), sections[:1], "cmd")


def counts(completed=0, diverged=0, failed=0, preempted=0, skipped=0) -> dict[str, int]:
  """What run_sweep returns: members per outcome, and how many of them were done before."""
  return {"completed": completed, "diverged": diverged, "failed": failed,
          "preempted": preempted, "skipped": skipped}


@pytest.fixture
def fake_sweep(report, monkeypatch):
  """Replaces `run_sweep` with one that records its calls and, per call, takes the next
  (seconds on report's clock, counts) from `results`; returns (calls, results)."""
  calls: list[tuple[str, str, int]] = []
  results: list[tuple[float, dict[str, int] | Exception]] = []
  clock = [1000.0]

  def run_sweep(config_arg: str, workdir: str, *, parallel: int, rerun_changed: bool,
                allow_stale: bool) -> dict[str, int]:
    calls.append((config_arg, workdir, parallel) + ((True,) if rerun_changed else ())
                 + (("allow_stale",) if allow_stale else ()))
    seconds, c = results.pop(0)
    clock[0] += seconds
    if isinstance(c, Exception):
      raise c
    return c

  monkeypatch.setattr(report, "run_sweep", run_sweep)
  monkeypatch.setattr(report, "time", types.SimpleNamespace(time=lambda: clock[0]))
  return calls, results


def test_run_sections_times_only_what_trained(report, fake_sweep, tmp_path):
  calls, results = fake_sweep
  sections = [report.Section("a", "x.py", "eval/loss"),
              report.Section("b", "y.py:arg", "eval/loss")]
  times = tmp_path / report.TIMES
  times.write_text(json.dumps({"other": 7.0}))
  results += [(30.0, counts(completed=2)), (5.0, counts(completed=2, skipped=2))]
  report.run_sections(str(tmp_path), sections, 3)
  assert calls == [("x.py", str(tmp_path / "a"), 3), ("y.py:arg", str(tmp_path / "b"), 3)]
  assert json.loads(times.read_text()) == {"other": 7.0, "a": 30.0}  # b was all done before
  # A rerun adds to what was there: a resumed one member, b got a new (diverged) one.
  results += [(45.0, counts(completed=2, skipped=1)), (10.0, counts(completed=2, diverged=1,
                                                                  skipped=2))]
  report.run_sections(str(tmp_path), sections, 1)
  assert calls[2:] == [("x.py", str(tmp_path / "a"), 1), ("y.py:arg", str(tmp_path / "b"), 1)]
  assert json.loads(times.read_text()) == pytest.approx({"other": 7.0, "a": 75.0, "b": 10.0})
  # Everything done: nothing is timed, and no times file appears where none was.
  results += [(99.0, counts(completed=2, skipped=2))]
  report.run_sections(str(tmp_path / "fresh"), sections[:1], 2)
  assert calls[-1] == ("x.py", str(tmp_path / "fresh" / "a"), 2)
  assert not (tmp_path / "fresh" / report.TIMES).exists()


def test_run_sections_stops_at_failed_members(report, fake_sweep, tmp_path):
  calls, results = fake_sweep
  sections = [report.Section("first", "x.py", "eval/loss"),
              report.Section("second", "y.py", "eval/loss")]
  results += [(30.0, counts(completed=1, failed=2)), (1.0, counts(completed=1))]
  with pytest.raises(RuntimeError, match=r"^first: 2 member\(s\) of the sweep failed; see "
                     r".*first/logs/"):
    report.run_sections(str(tmp_path), sections, 2)
  assert [c[0] for c in calls] == ["x.py"]  # the second sweep never started


def parse_and_run_main(report_cli, *args: str) -> None:
  report_cli.FLAGS(["report", *args])
  try:
    report_cli.main(["report"])
  finally:
    report_cli.FLAGS.unparse_flags()


def test_main_runs_only_matching_sections_but_reports_all(report, report_cli, two_sections,
                                                          monkeypatch):
  workdir, docs, sections = two_sections
  monkeypatch.setattr(report, "SECTIONS", tuple(sections))
  ran = []
  monkeypatch.setattr(report, "run_sections", lambda *args: ran.append(args))
  parse_and_run_main(report_cli, f"--workdir={workdir}", f"--docs={docs}", "--only=^b$",
                     "--parallel=3")
  assert ran == [(str(workdir), [sections[1]], 3, False, False, False)]
  text = (docs / "REPORT.md").read_text(encoding="utf-8")
  assert TABLE_A in text and TABLE_B in text and "{{" not in text
  assert f"`python -m rnn_research.report --workdir={workdir} --parallel=3`" in text
  (docs / "REPORT.md").unlink()
  parse_and_run_main(report_cli, f"--workdir={workdir}", f"--docs={docs}", "--no_run")
  assert len(ran) == 1 and TABLE_B in (docs / "REPORT.md").read_text(encoding="utf-8")


def run_cli(*args: str, module: str = "rnn_research.report") -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=dict(os.environ),
                        capture_output=True, text=True, timeout=120)


@pytest.mark.slow  # runs the report CLI as a process
def test_cli_only_matching_nothing_exits_2(report, tmp_path):
  proc = run_cli(f"--workdir={tmp_path}", f"--docs={tmp_path}", "--no_run", "--only=nomatch")
  assert proc.returncode == 2
  keys = [s.key for s in report.SECTIONS]
  assert proc.stderr == (f"bad input: --only='nomatch' matches no section; sections: "
                         f"{', '.join(keys)}\n")
  assert not (tmp_path / "REPORT.md").exists()


@pytest.mark.slow  # runs the report CLI as a process
def test_cli_no_run_rebuilds_report_from_disk(report, tmp_path):
  workdir, docs = tmp_path / "runs", tmp_path / "docs"
  lines = ["{{command}} {{commit}} {{date}} {{total_wall}}"]
  for directory in {s.directory for s in report.SECTIONS}:
    make_sweep(workdir / directory, [s.metric for s in report.SECTIONS
                                     if s.directory == directory],
               {"none": [0.5], "layer": [0.04]}, code=FINGERPRINT())  # the process's
  for s in report.SECTIONS:
    lines += [f"## {s.key} {{{{wall:{s.key}}}}}", f"{{{{table:{s.key}}}}}",
              f"{{{{figure:{s.key}}}}}"]
  docs.mkdir()
  (docs / "REPORT.template.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
  (workdir / report.TIMES).write_text(json.dumps({"skips": 90.0}))
  before = sorted(p.relative_to(workdir) for p in workdir.rglob("*"))
  proc = run_cli(f"--workdir={workdir}", f"--docs={docs}", "--no_run")
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout == f"wrote {docs / 'REPORT.md'}\n"
  text = (docs / "REPORT.md").read_text(encoding="utf-8")
  assert "{{" not in text
  assert text.startswith(f"python -m rnn_research.report --workdir={workdir} --parallel=2 ")
  assert "## skips 1.5 min\n" in text and "## activations not timed\n" in text
  for s in report.SECTIONS:
    assert f"![{s.key}](report/{s.key}/compare.png)" in text
    assert (docs / "report" / s.key / "compare.png").exists()
  lstm = text.split("## lstm_variants", 1)[1]  # the one section with a threshold
  assert "| steps to 0.05 |" in lstm.splitlines()[1]
  assert "| norm=layer | 1 | 1 | 0.04 | 0.04 | 0.04 | median 100 (0 of 1 censored) | 0/1 | – |" in lstm
  # Nothing ran: the sweeps' directories hold what they held.
  assert sorted(p.relative_to(workdir) for p in workdir.rglob("*")) == before


@pytest.mark.slow  # checks a real sweep file (imports jax and the trainer)
def test_run_sections_runs_the_real_sweep(report, tmp_path):
  # A sweep file whose only member is invalid: the real `sweep_runner.run_sweep` checks it and
  # raises before training anything, and run_sections stops with its message.
  bad = tmp_path / "bad_sweep.py"
  bad.write_text("from configs import default\n"
                 "def get_config(arg=None):\n"
                 "  return default.for_task('kalman', cell='gru', hidden_size=4, steps=2, "
                 "batch_size=4)\n"
                 "def get_sweep():\n"
                 "  return [{'model.cell': 'nope'}]\n")
  with pytest.raises(RuntimeError, match=r"^bad: bad input: .*bad_sweep.py: 1 of 1 member\(s\) "
                     r"are invalid, nothing was run:\n  member 0 \(cell=nope\): "
                     r"unknown cell 'nope'"):
    report.run_sections(str(tmp_path / "runs"), [report.Section("bad", str(bad), "eval/loss")], 1)
  assert not (tmp_path / "runs" / "bad").exists()


@pytest.mark.slow  # runs the report CLI as a process
def test_cli_only_bad_regex_exits_2(tmp_path):
  proc = run_cli(f"--workdir={tmp_path}", f"--docs={tmp_path}", "--no_run", "--only=(")
  assert proc.returncode == 2 and proc.stderr.startswith("bad input: ")
  assert proc.stderr.count("\n") == 1


def test_run_sections_runs_a_shared_sweep_once(report, fake_sweep, tmp_path):
  calls, results = fake_sweep
  sections = [report.Section("a", "x.py", "eval/loss"),
              report.Section("a_grad", "x.py", "grad/global_norm", mode="max", sweep="a"),
              report.Section("b_only_grad", "y.py", "grad/global_norm", sweep="b")]
  results += [(10.0, counts(completed=2)), (20.0, counts(completed=1))]
  report.run_sections(str(tmp_path), sections, 2)
  # One run per directory, the second metric of `a` reads the same sweep, and a section
  # selected only through a derived table still runs its sweep.
  assert calls == [("x.py", str(tmp_path / "a"), 2), ("y.py", str(tmp_path / "b"), 2)]
  assert json.loads((tmp_path / report.TIMES).read_text()) == {"a": 10.0, "b": 20.0}


def test_run_sections_times_a_sweep_that_failed(report, fake_sweep, tmp_path):
  # Its members trained before one failed: that time is part of what the report cost.
  calls, results = fake_sweep
  results += [(30.0, counts(completed=1, failed=1))]
  with pytest.raises(RuntimeError):
    report.run_sections(str(tmp_path), [report.Section("a", "x.py", "eval/loss")], 2)
  assert json.loads((tmp_path / report.TIMES).read_text()) == {"a": 30.0}


def test_run_sections_passes_rerun_changed_and_stops_at_a_changed_sweep(report, fake_sweep,
                                                                       tmp_path):
  from rnn_research.experiments.sweep_spec import SweepError

  calls, results = fake_sweep
  sections = [report.Section("a", "x.py", "eval/loss"), report.Section("b", "y.py", "eval/loss")]
  results += [(1.0, SweepError("1 member(s) in a ran with another config ... --rerun_changed"))]
  with pytest.raises(report.BadSweep, match=r"^a: bad input: 1 member\(s\) in a ran with "
                     r"another config .*--rerun_changed"):
    report.run_sections(str(tmp_path), sections, 2)
  assert calls == [("x.py", str(tmp_path / "a"), 2)]  # b never ran
  results += [(5.0, counts(completed=2)), (1.0, counts(completed=1, skipped=1))]
  report.run_sections(str(tmp_path), sections, 2, rerun_changed=True)
  assert calls[1:] == [("x.py", str(tmp_path / "a"), 2, True), ("y.py", str(tmp_path / "b"), 2,
                                                                True)]


def test_run_sections_times_an_interrupted_sweep_and_stops(report, fake_sweep, tmp_path):
  import signal

  from rnn_research.experiments.sweep_runner import Interrupted

  calls, results = fake_sweep
  sections = [report.Section("a", "x.py", "eval/loss"), report.Section("b", "y.py", "eval/loss")]
  results += [(20.0, Interrupted(signal.SIGTERM, counts(completed=1, preempted=1)))]
  with pytest.raises(Interrupted):
    report.run_sections(str(tmp_path), sections, 2)
  assert [c[0] for c in calls] == ["x.py"]
  assert json.loads((tmp_path / report.TIMES).read_text()) == {"a": 20.0}


# ------------------------------------------------------------------- provenance and staleness


def test_code_fingerprint_follows_core_tasks_and_training_only(tmp_path):
  package = tmp_path / "rnn_research"  # a copy of the package: the tree may change meanwhile
  shutil.copytree(provenance.PACKAGE, package, ignore=shutil.ignore_patterns("__pycache__"))
  base = FINGERPRINT(package)
  assert len(base) == 12 and int(base, 16) >= 0
  for rel in ("core/models.py", "tasks/kalman.py", "training/loop.py"):
    path = package / rel
    original = path.read_bytes()
    path.write_bytes(original + b"\n# an edit\n")
    assert FINGERPRINT(package) != base, rel
    path.write_bytes(original)
  assert FINGERPRINT(package) == base
  (package / "tasks" / "new_task.py").write_text("X = 1\n")  # a new file counts too
  assert FINGERPRINT(package) != base
  (package / "tasks" / "new_task.py").unlink()
  for rel in ("experiments/report.py", "report.py", "training/notes.md",  # not what a run is,
              "training/rollout.py", "training/sampling.py"):              # nor read-side tools
    (package / rel).write_text("changed\n")
  assert FINGERPRINT(package) == base


def test_git_commit_marks_only_fingerprinted_edits_dirty(tmp_path, monkeypatch):
  package = tmp_path / "repo" / "rnn_research"
  for rel in ("core/a.py", "experiments/b.py"):
    (package / rel).parent.mkdir(parents=True, exist_ok=True)
    (package / rel).write_text("A = 1\n")
  monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))  # no checkout above it
  assert provenance.git_commit(package) is None
  repo = ["git", "-C", str(tmp_path / "repo"), "-c", "user.name=t", "-c", "user.email=t@t"]
  subprocess.run(repo + ["init", "-q"], check=True)
  subprocess.run(repo + ["add", "."], check=True)
  subprocess.run(repo + ["commit", "-qm", "x"], check=True)
  head = subprocess.run(repo + ["rev-parse", "--short", "HEAD"], capture_output=True,
                        text=True, check=True).stdout.strip()
  assert provenance.git_commit(package) == head
  (package / "experiments" / "b.py").write_text("B = 2\n")
  (package / "core" / "untracked.py").write_text("C = 3\n")
  assert provenance.git_commit(package) == head  # neither a run's code nor tracked
  (package / "core" / "a.py").write_text("A = 2\n")
  assert provenance.git_commit(package) == head + "+dirty"
  monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))  # no git at all: None, no error
  assert provenance.git_commit(package) is None


def make_stale(run: Path, code: list[str] | None, commits: list[str] | None = None) -> None:
  """Rewrites the run's `code` and `commits` (None: as a run from before they were recorded)."""
  fields = read_status(str(run))
  for key, value in (("code", code), ("commits", commits)):
    fields.pop(key, None)
    if value is not None:
      fields[key] = value
  (run / "status.json").write_text(json.dumps(fields))


STALE_A = ("**STALE**: 2 of 4 runs trained at 1111111, unrecorded under code that has changed "
           "since; rerun with `--rerun_stale`")


@pytest.fixture
def stale_a(two_sections):
  """two_sections with 2 of a's 4 runs stale: one of other code, one that recorded none."""
  workdir = two_sections[0]
  make_stale(workdir / "a" / "norm=layer,seed=0", ["0123456789ab"], ["1111111"])
  make_stale(workdir / "a" / "norm=none,seed=1", None)
  return two_sections


def tree(root: Path) -> dict[str, bytes]:
  return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("run", [True, False])
def test_report_refuses_stale_sweeps_and_writes_nothing(report, report_cli, stale_a, fake_sweep,
                                                        monkeypatch, capsys, tmp_path, run):
  workdir, docs, sections = stale_a
  monkeypatch.setattr(report, "SECTIONS", tuple(sections))
  make_stale(workdir / "b" / "cell=gru,seed=0", ["0123456789ab"], ["2222222+dirty"])
  before = tree(tmp_path)
  with pytest.raises(SystemExit) as info:
    parse_and_run_main(report_cli, f"--workdir={workdir}", f"--docs={docs}",
                       *([] if run else ["--no_run"]))
  assert info.value.code == 2
  assert capsys.readouterr().err == (
      f"report: 2 sweep(s) in {workdir} hold runs trained under other code than "
      f"rnn_research/core, tasks and training hold now (fingerprint {CODE}), or that recorded "
      "none:\n  a: 2 of 4 run(s), trained at 1111111, unrecorded\n  b: 1 of 4 run(s), trained "
      "at 2222222+dirty\nrerun with --rerun_stale to move those runs aside to "
      "<sweep>.replaced-<time>/ and train them again (an --only must select their sections), "
      "or with --allow_stale to render them marked STALE\n")
  assert fake_sweep[0] == [] and tree(tmp_path) == before  # nothing ran, nothing written
  # --rerun_stale retrains only the sweeps --only selects: b stays stale and stops the report.
  with pytest.raises(report.BadSweep, match=r"^1 sweep\(s\) .*\n  b: 1 of 4 run\(s\)"):
    report.make_report(str(workdir), str(docs), 2, sections[:1], rerun_stale=True)
  assert fake_sweep[0] == [] and tree(tmp_path) == before


def test_allow_stale_renders_stale_sections_under_a_loud_line(report, report_cli, stale_a,
                                                              monkeypatch, capsys):
  workdir, docs, sections = stale_a
  monkeypatch.setattr(report, "SECTIONS", tuple(sections))
  parse_and_run_main(report_cli, f"--workdir={workdir}", f"--docs={docs}", "--no_run",
                     "--allow_stale")
  text = (docs / "REPORT.md").read_text(encoding="utf-8")
  assert f"## a (not timed, at 1111111, abc1234, unrecorded)\n{STALE_A}\n\n| group |" in text
  assert text.count("STALE") == 1 and "## b (not timed, at abc1234)\n| group |" in text
  err = capsys.readouterr().err
  assert err == ("report: warning: a is marked STALE: 2 of 4 run(s) trained at 1111111, "
                 "unrecorded under other code\n")


def test_allow_stale_lets_the_sweeps_keep_their_stale_runs(report, stale_a, fake_sweep,
                                                            monkeypatch):
  workdir, docs, sections = stale_a
  monkeypatch.setattr(report, "SECTIONS", tuple(sections))
  calls, results = fake_sweep
  results.extend([(1.0, counts(completed=4, skipped=4))] * 2)
  report.make_report(str(workdir), str(docs), 2, sections, allow_stale=True)
  assert calls == [("x.py", str(workdir / "a"), 2, "allow_stale"),
                   ("y.py:arg", str(workdir / "b"), 2, "allow_stale")]
  assert "STALE" in (docs / "REPORT.md").read_text(encoding="utf-8")


def test_cli_refuses_rerun_stale_with_no_run(report_cli, two_sections, capsys):
  workdir, docs, _ = two_sections
  with pytest.raises(SystemExit) as info:
    parse_and_run_main(report_cli, f"--workdir={workdir}", f"--docs={docs}", "--no_run",
                       "--rerun_stale")
  assert info.value.code == 2
  assert capsys.readouterr().err == ("bad input: --rerun_stale trains and --no_run trains "
                                     "nothing; drop one of them (--allow_stale renders stale "
                                     "sweeps without training)\n")
  assert not (docs / "REPORT.md").exists()


def test_rerun_stale_moves_the_stale_runs_aside_and_retrains(report, stale_a, fake_sweep):
  workdir, docs, sections = stale_a
  calls, results = fake_sweep
  for run in (workdir / "b").iterdir():  # all of b is stale: its wall time goes with its runs
    if run.is_dir():
      make_stale(run, ["0123456789ab"], ["1111111"])
  (workdir / report.TIMES).write_text(json.dumps({"a": 60.0, "b": 30.0}))
  (workdir / "a" / "logs").mkdir()
  (workdir / "a" / "logs" / "norm=layer,seed=0.log").write_text("old log")
  results += [(10.0, counts(completed=4, skipped=2)), (20.0, counts(completed=4))]
  report.run_sections(str(workdir), sections, 2, rerun_stale=True)
  assert [c[:2] for c in calls] == [("x.py", str(workdir / "a")), ("y.py:arg", str(workdir / "b"))]
  moved_a, = workdir.glob("a.replaced-*")
  assert sorted(p.name for p in moved_a.iterdir()) == ["logs", "norm=layer,seed=0",
                                                       "norm=none,seed=1"]
  assert (moved_a / "logs" / "norm=layer,seed=0.log").read_text() == "old log"
  assert sorted(p.name for p in (workdir / "a").iterdir()) == ["logs", "norm=layer,seed=1",
                                                               "norm=none,seed=0", "sweep.json"]
  moved_b, = workdir.glob("b.replaced-*")
  assert json.loads((moved_b / report.TIMES).read_text()) == {"b": 30.0}
  assert json.loads((workdir / report.TIMES).read_text()) == {"a": 70.0, "b": 20.0}


def test_rerun_stale_report_renders_the_retrained_sweep(report, stale_a, monkeypatch, capsys):
  workdir, docs, sections = stale_a
  monkeypatch.setattr(report, "SECTIONS", tuple(sections))
  retrained = []

  def run_sweep(config_arg: str, directory: str, *, parallel: int, rerun_changed: bool,
                allow_stale: bool):
    retrained.append(sorted(p.name for p in Path(directory).iterdir()))
    for run in Path(directory).iterdir():  # a fake retraining: a fresh sweep, under new code
      if run.is_dir():
        shutil.rmtree(run)
    make_sweep(Path(directory), "eval/loss", {"layer": [0.9, 0.7], "none": [0.3, 0.5]})
    return counts(completed=4, skipped=2)

  monkeypatch.setattr(report, "run_sweep", run_sweep)
  report.make_report(str(workdir), str(docs), 2, sections[:1], rerun_stale=True)
  assert retrained == [["norm=layer,seed=1", "norm=none,seed=0", "sweep.json"]]
  text = (docs / "REPORT.md").read_text(encoding="utf-8")
  assert "STALE" not in text and f" min, at abc1234)\n{TABLE_A}" in text
  assert "moved the old runs of 2 stale member(s) to " in capsys.readouterr().out


@pytest.mark.slow  # trains a real two-seed sweep, then one member again
def test_a_real_sweep_records_its_code_and_rerun_stale_retrains_it(report, tmp_path,
                                                                  monkeypatch):
  from tests.test_sweep_trust import write_sweep

  monkeypatch.setattr(provenance, "code_fingerprint", FINGERPRINT)  # as the members compute it
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  monkeypatch.chdir(ROOT)
  workdir, docs = tmp_path / "runs", tmp_path / "docs"
  section = report.Section("two", write_sweep(tmp_path), "eval/loss")
  monkeypatch.setattr(report, "SECTIONS", (section,))
  docs.mkdir()
  (docs / "REPORT.template.md").write_text("{{trained:two}}\n{{table:two}}\n", encoding="utf-8")
  report.run_sections(str(workdir), [section], 2)
  code, commit = FINGERPRINT(), provenance.git_commit()
  for name in ("seed=0", "seed=1"):
    status = read_status(str(workdir / "two" / name))
    assert (status["code"], status["commits"]) == ([code], [commit] if commit else [])
  make_stale(workdir / "two" / "seed=1", ["0123456789ab"], ["1111111"])
  with pytest.raises(report.BadSweep, match=r"\n  two: 1 of 2 run\(s\), trained at 1111111\n"):
    report.make_report(str(workdir), str(docs), 2, run=False)
  report.make_report(str(workdir), str(docs), 2, rerun_stale=True)
  moved, = tmp_path.glob("runs/two.replaced-*")
  assert read_status(str(moved / "seed=1"))["code"] == ["0123456789ab"]
  assert read_status(str(workdir / "two" / "seed=1"))["code"] == [code]  # trained again
  text = (docs / "REPORT.md").read_text(encoding="utf-8")
  assert text.startswith(f"{commit or 'unrecorded'}\n| group |") and "STALE" not in text


# ------------------------------------------------- log scale, wall table, samples, importance


def render_with(report, docs: Path, template: str, workdir: Path, sections, monkeypatch) -> str:
  """render() of `sections` under `template` (a copy written into docs/), at a fixed commit."""
  monkeypatch.setattr(report, "_commit", lambda: "c0mm1t")
  (docs / "REPORT.template.md").write_text(template, encoding="utf-8")
  return report.render(str(workdir), str(docs), sections, "cmd")


def test_render_log_section_renders_compares_log_table(report, two_sections, monkeypatch,
                                                       tmp_path):
  import dataclasses

  from rnn_research.experiments import compare

  workdir, docs, sections = two_sections
  manifest = workdir / "a" / "sweep.json"  # a baseline, so that the effect column shows
  manifest.write_text(json.dumps({**json.loads(manifest.read_text()),
                                  "baseline": {"model.norm": "none"}}))
  logged = report.Section("a", "x.py", "eval/loss")
  assert logged.log  # the default: positive errors compare as ratios
  text = render_with(report, docs, "{{table:a}}\n", workdir, [logged], monkeypatch)
  want = compare.report(str(workdir / "a"), "eval/loss", out=str(tmp_path / "want"), log=True)
  assert "\n\nmetric: eval/loss (log), mode: min, date: " in want
  assert text == want.rsplit("\n\nmetric:", 1)[0] + "\n"
  head = text.splitlines()[0].split(" | ")
  assert "final geo. mean [95% CI]" in head and "final mean [95% CI]" not in head
  # norm=none: sqrt(0.3 * 0.5) = 0.3873; norm=layer: sqrt(0.9 * 0.7) = 0.7937, the ratio 2.049
  assert "| norm=none | 2 | 2 | 0.3873 [" in text and "| norm=layer | 2 | 2 | 0.7937 [" in text
  assert "| group | n | ratio to norm=none [95% CI] | Hedges' g |" in text
  assert "| norm=layer | 2 | 2.049× [" in text and "Δ vs" not in text

  linear = render_with(report, docs, "{{table:a}}\n", workdir,
                       [dataclasses.replace(logged, log=False)], monkeypatch)
  assert "final mean [95% CI]" in linear.splitlines()[0].split(" | ")
  assert "| norm=none | 2 | 2 | 0.4 [" in linear
  assert "| Δ vs norm=none [95% CI] |" in linear and "ratio to" not in linear
  assert "geo. mean" not in linear


def test_render_wall_table_lists_the_sweeps_with_their_own_directory(report, two_sections,
                                                                     monkeypatch):
  workdir, docs, sections = two_sections
  # One run of b resumed at a later commit under the same code (so not stale).
  make_stale(workdir / "b" / "cell=gru,seed=1", [CODE], ["abc1234", "def5678"])
  (workdir / report.TIMES).write_text(json.dumps({"a": 120.0, "b": 30.0}))
  derived = report.Section("a_again", "x.py:derived", "eval/loss", sweep="a", log=False)
  text = render_with(report, docs, TEMPLATE + "\n{{wall_table}}\nend\n", workdir,
                     [sections[0], derived, sections[1]], monkeypatch)
  assert "{{" not in text
  assert text.endswith("\n| sweep | wall | trained at |\n|---|---|---|\n"
                       "| `x.py` | 2.0 min | abc1234 |\n"
                       "| `y.py:arg` | 0.5 min | abc1234, def5678 |\nend\n")
  assert "x.py:derived" not in text  # a second table of sweep a: no row of its own
  assert "## b (0.5 min, at abc1234, def5678)" in text  # the same figures as the section's

  (workdir / report.TIMES).unlink()
  text = render_with(report, docs, "{{wall_table}}\n", workdir, [derived, sections[1]],
                     monkeypatch)
  assert text == ("| sweep | wall | trained at |\n|---|---|---|\n"
                  "| `y.py:arg` | not timed | abc1234, def5678 |\n")


def test_render_fills_samples_only_for_sections_with_samples(report, two_sections, monkeypatch):
  import dataclasses

  from rnn_research.experiments import report_samples

  workdir, docs, sections = two_sections
  calls = []

  def markdown(directory, group_by=None, **kwargs):
    calls.append((directory, group_by, kwargs))
    return f"SAMPLES OF {os.path.basename(directory)}"

  monkeypatch.setattr(report_samples, "markdown", markdown)
  template = TEMPLATE + "\n[{{samples:a}}]\n[{{samples:b}}]\n"
  text = render_with(report, docs, template, workdir, sections, monkeypatch)
  assert "{{" not in text and text.endswith("\n[]\n[]\n")  # filled with ""
  assert text == render_with(report, docs, TEMPLATE, workdir, sections, monkeypatch) + \
      "\n[]\n[]\n"
  assert calls == []  # no section asked for samples: nothing sampled

  with_samples = [sections[0], dataclasses.replace(sections[1], samples=True),
                  report.Section("c", "z.py", "eval/loss", samples=True)]  # not run yet
  text = render_with(report, docs, template + "[{{samples:c}}] {{table:c}}\n", workdir,
                     with_samples, monkeypatch)
  assert text.endswith("\n[]\n[SAMPLES OF b]\n[] *(not run yet: `python -m rnn_research.report "
                       "--only=c`)*\n")
  assert calls == [(str(workdir / "b"), ["model.cell"], {})]  # b's directory and group_by


def test_render_importance_appends_compares_importance_table(report, two_sections, monkeypatch):
  import dataclasses

  workdir, docs, sections = two_sections
  importance = ("| axes | share of variance |\n|---|---|\n| model.norm | 100.0% |\n"
                "| interactions of 3+ axes | 0.0% |\n\nVariance of {metric} (min is best) "
                "explained by each axis (functional ANOVA), exact on the full grid of 2 points "
                "(4 runs, repeats averaged).")
  a = dataclasses.replace(sections[0], importance=True)
  text = render_with(report, docs, "{{table:a}}\n", workdir, [a], monkeypatch)
  assert text.rstrip("\n") == TABLE_A + "\n\n" + importance.format(metric="eval/loss")
  assert "metric:" not in text  # compare's footer is still cut off after the importance table
  # Under log the importance is of the log of the metric.
  logged = dataclasses.replace(a, log=True)
  text = render_with(report, docs, "{{table:a}}\n", workdir, [logged], monkeypatch)
  assert text.rstrip("\n").endswith("\n\n" + importance.format(metric="log eval/loss"))
  assert "final geo. mean [95% CI]" in text.splitlines()[0]
  # Without `importance`: no such table.
  text = render_with(report, docs, "{{table:a}}\n", workdir, sections[:1], monkeypatch)
  assert "share of variance" not in text and text == TABLE_A + "\n"
