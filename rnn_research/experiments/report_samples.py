"""Text samples for a report section on `charlm`: the completed run of each group with the
lowest seed continues one prompt (training/sampling.generate), so that a reader can see what a
difference in bits per character looks like. Deterministic: one sampling seed, one temperature.
"""
from __future__ import annotations

from rnn_research.experiments import compare
from rnn_research.training import sampling

PROMPT = "ROMEO."
LENGTH = 240  # characters generated after the prompt
TEMPERATURE = 0.8


def markdown(directory: str, group_by: list[str] | None = None, prompt: str = PROMPT,
             length: int = LENGTH, temperature: float = TEMPERATURE, seed: int = 0) -> str:
  """One fenced block per group of the sweep in `directory`: `prompt` and its continuation
  from the group's completed run with the lowest `train.seed`, headed by the group, the run and
  its final `eval/bpc`. A group without a completed run is named as such."""
  parts = [f"Samples: prompt {prompt!r}, {length} characters, temperature {temperature}, "
           f"sampling seed {seed} (`python -m rnn_research.sample --workdir=<run> "
           f"--prompt={prompt!r} --length={length} --temperature={temperature} --seed={seed}`)."]
  for group, run in compare.first_runs(directory, group_by).items():
    if run is None:
      parts.append(f"**{group}**: no completed run to sample from.")
      continue
    text = sampling.generate(run.path, prompt, length, temperature, seed)[0]
    bpc = run.status.get("metrics", {}).get("bpc")
    head = f"**{group}** (`{run.name}`" + (f", eval/bpc {bpc:.3f}" if bpc is not None else "")
    parts.append(f"{head}):\n\n```text\n{prompt}{text}\n```")
  return "\n\n".join(parts)
