"""Ablation: cells for generation, with and without truncated BPTT's carried state (lecture 5.2).

Claim tested (5.2, 4): a character-level language model is an autoregressive RNN; the gated
cells (LSTM, GRU) model text better than the vanilla RNN, whose memory of earlier characters
dies within a few steps. Beyond the lecture: carrying the state across training windows
(truncated BPTT, Keras `stateful`) lets the model use context beyond one window.

Setup: `charlm` (Shakespeare shipped in a package), one layer of 64 units, adam, batch 32,
1500 steps, eval on 8 held-out rows of 2048 characters each run as one stream. Members:
`model.cell` in {rnn, gru, lstm} × training on crops of 128 characters from h_0 (tbptt off) or
on streams of 2048 characters in windows of 128 with the state carried (`train.tbptt_window=128`,
`task.stream_length=2048`) × 3 seeds (18 runs).

Supports the claim: the LSTM and GRU end below the RNN in `eval/bpc` (the unigram baseline is
4.85 bpc); carried state lowers bpc for the gated cells on the long held-out rows.
Contradicts it: the RNN matches the gated cells, or carried state makes no difference ("no
evidence") or costs (a 128-unit LSTM measured 2.43 with it against 2.40 without over 2 seeds at
3000 steps when this file was written: the issue is open).

  python -m rnn_research.sweep --config=configs/ablations/generation.py \
      --workdir=runs/generation --parallel=2
  python -m rnn_research.compare runs/generation --metric=eval/bpc
  python -m rnn_research.sample --workdir=runs/generation/cell=lstm,tbptt_window=128,...,seed=0

Size: 18 runs of roughly 30-60 s on 2 CPU cores; `:full` trains 4x longer with 128 units.
"""
import ml_collections

from configs import default
from rnn_research.sweep_spec import product, seeds, sweep


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """`arg`: None or "small" (the CPU size) or "full"."""
  if arg not in (None, "small", "full"):
    raise ValueError(f"generation.py: unknown arg {arg!r}; valid: small, full")
  full = arg == "full"
  config = default.for_task("charlm", cell="lstm", hidden_size=128 if full else 64,
                            steps=6000 if full else 1500, batch_size=32)
  # Held-out rows as long as a training stream, the same for both forms of training.
  config.task.eval_windows = 8
  config.task.eval_length = 2048
  return config


def get_sweep() -> list[dict]:
  crops = {"train.tbptt_window": 0, "task.stream_length": 0}
  streams = {"train.tbptt_window": 128, "task.stream_length": 2048}
  return product(sweep("model.cell", ["rnn", "gru", "lstm"]), [crops, streams], seeds(3))


def get_baseline() -> dict:
  """The group every other is tested against (compare): the LSTM trained on crops."""
  return {"model.cell": "lstm", "train.tbptt_window": 0, "task.stream_length": 0}


def get_metric() -> tuple[str, str]:
  return ("eval/bpc", "min")
