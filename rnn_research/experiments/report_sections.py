"""The report's sections: which sweep each table comes from, and which metric it compares.

Every positive error or ratio (MSE over a reference, a gradient-norm ratio) is compared on the
log scale: such metrics span orders of magnitude and act multiplicatively, so a group's centre is
its geometric mean and an effect a ratio with its CI. Accuracy and bits per character, already on
a bounded or log scale, are compared as they are (`log=False`).

A section renders `{{table:<key>}}`, `{{figure:<key>}}`, `{{wall:<key>}}`,
`{{trained:<key>}}`, `{{samples:<key>}}` and `{{per_step:<key>}}` in docs/REPORT.template.md
(experiments/report.py); sections of one sweep share its directory (`sweep`), so it trains once.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Section:
  """One table of the report: a metric of one sweep, run in `<workdir>/<sweep or key>/`."""
  key: str
  config: str  # sweep file[:arg]
  metric: str
  group_by: tuple[str, ...] = ()
  threshold: float | None = None
  mode: str = "auto"  # compare's min|max|auto: which end of the metric is "best"
  sweep: str | None = None  # another section's directory, to table a second metric of it
  ylim: tuple[float, float] | None = None  # the figure's y range
  log: bool = True  # compare on the log scale: ratios of geometric means (compare --log)
  importance: bool = False  # add each axis' share of the metric's variance (compare --importance)
  samples: bool = False  # `{{samples:<key>}}`: text from each group (charlm; report_samples.py)
  per_step: bool = False  # `{{per_step:<key>}}`: MSE per step over Kalman (report_filtering.py)

  @property
  def directory(self) -> str:
    return self.sweep or self.key


SECTIONS = (
    Section("activations", "configs/ablations/activations.py", "eval/mse_over_chance",
            ylim=(0.0, 2.0)),
    Section("activations_grad_peak", "configs/ablations/activations.py", "grad/global_norm",
            mode="max", sweep="activations"),
    Section("clipping", "configs/ablations/clipping.py", "eval/mse_over_chance",
            ylim=(0.0, 1.5)),
    Section("norm_placement", "configs/ablations/norm_placement.py", "eval/mse_over_chance",
            threshold=0.1, ylim=(0.0, 2.0)),
    Section("norm_placement_tanh", "configs/ablations/norm_placement.py:tanh",
            "eval/mse_over_chance", threshold=0.1, ylim=(0.0, 2.0)),
    Section("norm_placement_kalman", "configs/ablations/norm_placement.py:kalman",
            "eval/mse_over_kalman"),  # no ylim: the width-2 runs (2-3x) must show
    Section("skips", "configs/ablations/skips.py", "eval/mse_over_chance", ylim=(0.0, 1.5)),
    Section("skips_grad_flow", "configs/ablations/skips.py", "grad/ratio_first_last_layer",
            mode="max", sweep="skips"),
    Section("horizontal_skips", "configs/ablations/horizontal_skips.py",
            "eval/mse_over_chance", ylim=(0.0, 1.5)),
    Section("horizontal_skips_grad_flow", "configs/ablations/horizontal_skips.py",
            "grad_flow/ratio_first_last/layer_0", mode="max", sweep="horizontal_skips",
            log=False),  # without a skip the ratio underflows float32 to 0: no log of it
    Section("horizontal_skips_kalman", "configs/ablations/horizontal_skips.py:kalman",
            "eval/mse_over_kalman"),
    Section("horizontal_skips_multiscale", "configs/ablations/horizontal_skips.py:multiscale",
            "eval/accuracy", log=False),
    Section("lstm_variants", "configs/ablations/lstm_variants.py", "eval/mse_over_chance",
            threshold=0.05, importance=True),
    Section("transition_pendulum", "configs/ablations/transition.py:pendulum",
            "eval/mse_over_ekf"),
    Section("transition_pendulum_pf", "configs/ablations/transition.py:pendulum",
            "eval/mse_over_pf", sweep="transition_pendulum"),
    Section("transition_kalman", "configs/ablations/transition.py:kalman",
            "eval/mse_over_kalman", per_step=True),
    Section("transition_kalman_start", "configs/ablations/transition.py:kalman",
            "eval/mse_over_kalman_start", sweep="transition_kalman"),
    Section("transition_kalman_steady", "configs/ablations/transition.py:kalman",
            "eval/mse_over_kalman_steady", sweep="transition_kalman"),
    Section("generation", "configs/ablations/generation.py", "eval/bpc", log=False,
            samples=True),
)
