"""`experiments/report_samples.py`: the report's text samples, one per group of a charlm sweep.

Two tiny charlm runs (seeds 2 and 10, 2 steps of a 4-unit LSTM) are trained once, together (one
vmapped program, `train.train_seeds`); each test lays copies of them out as a sweep directory
(sweep.json, and each copy's config.json and status.json edited to its member) whose groups
differ in `train.learning_rate`, a key that leaves the model, and so the checkpoint, as it is.
Seed 10 sorts before seed 2 by name: the run sampled must be the lowest seed by value.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from rnn_research.experiments import report_samples
from rnn_research.training import provenance, sampling, train
from rnn_research.training.config_defaults import for_task
from rnn_research.training.status import read_status

PROMPT, LENGTH, TEMPERATURE = "ROMEO.", 24, 0.8
NONE_LINE = "**{group}**: no completed run to sample from."


def tiny_config(seed: int):
  config = for_task("charlm", cell="lstm", hidden_size=4, steps=2, batch_size=4)
  config.train.update(dict(seed=seed, eval_every=2, log_every=1, checkpoint_every=2,
                           diagnostics_every=2))
  config.task.update(dict(length=16, eval_windows=4, eval_length=16))
  return config


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[int, Path]:
  """{seed: run directory} of two tiny completed charlm runs, seeds 2 and 10."""
  root = tmp_path_factory.mktemp("trained")
  runs = {seed: root / f"seed={seed}" for seed in (2, 10)}
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(provenance, "git_commit", lambda *args, **kwargs: None)  # no git needed
    train.train_seeds([tiny_config(seed) for seed in runs], [str(p) for p in runs.values()])
  for run in runs.values():
    assert read_status(str(run))["state"] == "completed"
  return runs


@pytest.fixture(scope="module")
def texts(trained) -> dict[int, str]:
  """{seed: what sampling.generate continues PROMPT with} from each trained run."""
  found = {seed: sampling.generate(str(run), PROMPT, LENGTH, TEMPERATURE, 0)[0]
           for seed, run in trained.items()}
  assert len(found[2]) == len(found[10]) == LENGTH
  assert found[2] != found[10]  # which run was sampled shows in the text
  return found


def lay_out(root: Path, trained: dict[int, Path],
            members: list[tuple[float, int, str | None]]) -> Path:
  """A sweep directory in `root`: per (learning rate, seed, state) a copy of the run of that
  seed named `learning_rate=<lr>,seed=<seed>`, its state set (None: no status.json, a member
  that never started)."""
  manifest = []
  for lr, seed, state in members:
    name = f"learning_rate={lr:g},seed={seed}"
    run = root / name
    shutil.copytree(trained[seed], run)
    config = json.loads((run / "config.json").read_text())
    config["train"]["learning_rate"] = lr
    (run / "config.json").write_text(json.dumps(config))
    if state is None:
      (run / "status.json").unlink()
    else:
      status = read_status(str(run))
      (run / "status.json").write_text(json.dumps({**status, "state": state}))
    manifest.append({"name": name, "overrides": {"train.learning_rate": lr, "train.seed": seed}})
  (root / "sweep.json").write_text(json.dumps({"config": "x.py", "members": manifest}))
  return root


def block(group: str, run: Path, text: str, prompt: str = PROMPT) -> str:
  bpc = read_status(str(run))["metrics"]["bpc"]
  return f"**{group}** (`{run.name}`, eval/bpc {bpc:.3f}):\n\n```text\n{prompt}{text}\n```"


def samples(directory: Path, group_by=None, **kwargs) -> str:
  kwargs = {"prompt": PROMPT, "length": LENGTH, "temperature": TEMPERATURE, **kwargs}
  return report_samples.markdown(str(directory), group_by, **kwargs)


def intro(out: str) -> str:
  return out.split("\n\n", 1)[0]


def test_one_block_per_group_from_its_lowest_seed_completed_run(trained, texts, tmp_path):
  sweep = lay_out(tmp_path, trained, [
      (0.01, 10, "completed"), (0.01, 2, "completed"),  # both done: seed 2 (sorts second)
      (0.02, 2, "failed"), (0.02, 10, "completed"),     # the lowest seed failed: seed 10
      (0.03, 2, "failed"), (0.03, 10, "running"),       # none done
  ])
  out = samples(sweep)
  assert intro(out).startswith(f"Samples: prompt 'ROMEO.', {LENGTH} characters, temperature "
                               f"{TEMPERATURE}, sampling seed 0 ")
  assert out == "\n\n".join([
      intro(out),
      block("learning_rate=0.01", sweep / "learning_rate=0.01,seed=2", texts[2]),
      block("learning_rate=0.02", sweep / "learning_rate=0.02,seed=10", texts[10]),
      NONE_LINE.format(group="learning_rate=0.03")])
  assert out.count("```text\n") == 2
  assert "eval/bpc " in out and "seed=10`, eval/bpc" in out


def test_samples_are_deterministic_and_follow_the_sampling_seed(trained, texts, tmp_path):
  sweep = lay_out(tmp_path, trained, [(0.01, 2, "completed")])
  run = sweep / "learning_rate=0.01,seed=2"
  out = samples(sweep)
  assert out == samples(sweep)  # the same text every time
  assert out == intro(out) + "\n\n" + block("learning_rate=0.01", run, texts[2])
  # The prompt and its continuation, as sampling.generate (and the sample CLI) gives them.
  assert f"```text\n{PROMPT}{sampling.generate(str(run), PROMPT, LENGTH, TEMPERATURE, 0)[0]}\n```" \
      in out
  # Another sampling seed, prompt, length and temperature reach generate and the intro.
  other = samples(sweep, prompt="JULIET", length=10, temperature=0.05, seed=1)
  again = sampling.generate(str(run), "JULIET", 10, 0.05, 1)[0]
  assert len(again) == 10
  assert again != sampling.generate(str(run), "JULIET", 10, 0.05, 0)[0]  # the seed shows
  assert again != sampling.generate(str(run), "JULIET", 10, TEMPERATURE, 1)[0]  # and T
  assert intro(other).startswith("Samples: prompt 'JULIET', 10 characters, temperature 0.05, "
                                 "sampling seed 1 ")
  assert "--seed=1`" in intro(other) and "--length=10 " in intro(other)
  assert other == intro(other) + "\n\n" + block("learning_rate=0.01", run, again, "JULIET")


def test_group_by_and_a_run_directory_of_its_own(trained, texts, tmp_path):
  sweep = lay_out(tmp_path, trained, [(0.01, 10, "completed"), (0.02, 2, "completed"),
                                      (0.03, 2, "failed")])
  # One group of every run (all are LSTMs): the completed one of the lowest seed.
  out = samples(sweep, ["model.cell"])
  assert out == intro(out) + "\n\n" + block("cell=lstm", sweep / "learning_rate=0.02,seed=2",
                                            texts[2])
  # A run directory rather than a sweep: one group, the run itself.
  out = samples(trained[10])
  assert out == intro(out) + "\n\n" + block("base", trained[10], texts[10])


def test_groups_without_a_completed_run_sample_nothing(trained, tmp_path, monkeypatch):
  sweep = lay_out(tmp_path, trained, [(0.01, 2, "failed"), (0.02, 10, "diverged"),
                                      (0.03, 2, None)])
  monkeypatch.setattr(sampling, "generate", lambda *args, **kwargs: pytest.fail("sampled"))
  out = samples(sweep)
  assert out == "\n\n".join([intro(out)] + [NONE_LINE.format(group=f"learning_rate={lr}")
                                            for lr in ("0.01", "0.02", "0.03")])


def test_render_fills_the_samples_of_a_samples_section(trained, texts, tmp_path, monkeypatch):
  from rnn_research.experiments import report

  workdir, docs = tmp_path / "runs", tmp_path / "docs"
  sweep = lay_out(workdir / "gen", trained, [(0.01, 10, "completed"), (0.01, 2, "completed"),
                                             (0.02, 2, "failed")])
  docs.mkdir()
  (docs / "REPORT.template.md").write_text("{{table:gen}}\n\n{{samples:gen}}\n",
                                           encoding="utf-8")
  monkeypatch.setattr(report, "_commit", lambda: "c0mm1t")
  section = report.Section("gen", "configs/ablations/generation.py", "eval/bpc", log=False,
                           samples=True)
  text = report.render(str(workdir), str(docs), [section], "cmd")
  want = report_samples.markdown(str(sweep))  # the report's prompt, length and temperature
  assert text.endswith("\n\n" + want + "\n")
  assert want.startswith(f"Samples: prompt {report_samples.PROMPT!r}, {report_samples.LENGTH} "
                         f"characters, temperature {report_samples.TEMPERATURE}, sampling seed 0 ")
  assert "(`learning_rate=0.01,seed=2`, eval/bpc " in want
  assert want.endswith("\n```\n\n" + NONE_LINE.format(group="learning_rate=0.02"))
  assert text.startswith("| group | runs | n | final mean [95% CI] |")
