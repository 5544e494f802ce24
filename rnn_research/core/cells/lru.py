"""The Linear Recurrent Unit (Orvieto et al. 2023, "Resurrecting Recurrent Neural Networks for
Long Sequences"): a complex diagonal linear recurrence of N modes, then a per-step GLU.

  λ_j = exp(-exp(ν_j) + i exp(θ_j))            |λ_j| < 1 for every ν, θ                [N]
  s_t = λ ⊙ s_{t-1} + γ ⊙ (B x_t + b_B)        B [N, F] complex, γ_j = exp(γlog_j)   [B, N]
  y_t = Re(C s_t) + x_t W_D + b_D              C [H, N] complex, W_D [F, H]          [B, H]
  out_t = (u W_1 + b_1) ⊙ σ(u W_2 + b_2),      u = GELU(y_t); W_1, W_2 [H, H]         [B, H]

The layer's output is out_t. Initialisation (the paper's): λ uniform on the ring r_min <= |λ|
<= r_max (|λ|² uniform on [r_min², r_max²]) with phase exp(θ) uniform on [0, max_phase];
γ_j = sqrt(1 - |λ_j|²), so white-noise input gives the state the variance of B x_t (the
paper's normalisation; γ is trained); Re and Im of B ~ N(0, 1/(2F)), of C ~ N(0, 1/N); W_D,
W_1, W_2 LeCun normal; biases 0.

Where this differs from the paper: the skip D x_t is a dense F x H matrix W_D (the paper's D
is diagonal, with F = H; a layer's input width F may differ from H here), and B x_t has a
bias b_B (the base cell's b; the paper has none); both sit in the one fused input GEMM. The
paper's block around the LRU (a norm before it, a residual around it) is the stack's
`norm='layer'` and `vertical_skip='residual'`.

Storage, all real: W_x = [Re Bᵀ | Im Bᵀ | W_D] [F, 2N + H]; the carry h = [Re s, Im s] [B, 2N]
(float32, so masks, resets, checkpoints and a learned initial state work unchanged); W_C =
[Re Cᵀ; -Im Cᵀ] [2N, H], so Re(C s) = h W_C. The scan runs on complex s (`parallel_scan`):
as fast as real pairs on XLA:CPU (docs/axes.md) and it keeps the generic combine.
"""
from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from rnn_research.core.carry import Carry
from rnn_research.core.cells.base import CELLS
from rnn_research.core.cells.min_cells import MinCell
from rnn_research.core.initializers import input_init


def ring_init(key: jax.Array, n: int, r_min: float, r_max: float, max_phase: float
              ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(ν, θ, γlog) [n] each: |λ|² uniform on [r_min², r_max²], arg λ uniform on [0, max_phase],
  γ = sqrt(1 - |λ|²). Uniforms are drawn on [1e-6, 1) so no log sees 0 (and r_max < 1)."""
  u = jax.random.uniform(key, (2, n), minval=1e-6, maxval=1.0)
  r2 = r_min ** 2 + u[0] * (r_max ** 2 - r_min ** 2)
  nu = jnp.log(-0.5 * jnp.log(r2))                    # |λ| = exp(-exp(ν))
  gamma_log = 0.5 * jnp.log(-jnp.expm1(-2.0 * jnp.exp(nu)))   # log sqrt(1 - |λ|²)
  return nu, jnp.log(max_phase * u[1]), gamma_log


@CELLS.register("lru")
class LRUCell(MinCell):
  """The LRU (module docstring). state_size N (0: N = hidden_size H); r_min, r_max, max_phase:
  the ring initialisation of λ. `activation`, `recurrent_init`, `recurrent_scale` are not read.

  Carry: h = [Re s, Im s] [B, 2N]; output out_t [B, H].
  """

  spec_args = {"state_size": "lru_state_size", "r_min": "lru_r_min", "r_max": "lru_r_max",
               "max_phase": "lru_max_phase"}

  def __init__(self, in_features: int, hidden_size: int, *, rngs: nnx.Rngs,
               state_size: int = 0, r_min: float = 0.9, r_max: float = 0.999,
               max_phase: float = 2 * math.pi, **common: Any):
    n = state_size or hidden_size
    self.state_size = n
    super().__init__(in_features, hidden_size, rngs=rngs, num_gates=1,
                     gate_width=2 * n + hidden_size, **common)
    k_b, k_d, k_c, k_glu, k_ring = jax.random.split(rngs.params(), 5)
    b_in = jax.random.normal(k_b, (in_features, 2 * n)) / math.sqrt(2 * in_features)
    self.w_x = nnx.Param(jnp.concatenate(
        [b_in, input_init(k_d, (in_features, hidden_size))], axis=-1))
    self.w_c = nnx.Param(jax.random.normal(k_c, (2 * n, hidden_size)) / math.sqrt(n))
    self.w_glu = nnx.Param(input_init(k_glu, (hidden_size, 2 * hidden_size)))
    self.b_glu = nnx.Param(jnp.zeros((2 * hidden_size,)))
    nu, theta, gamma_log = ring_init(k_ring, n, r_min, r_max, max_phase)
    self.nu, self.theta, self.gamma_log = nnx.Param(nu), nnx.Param(theta), nnx.Param(gamma_log)

  def extra_params(self) -> dict[str, jax.Array]:
    return {"nu": self.nu[...], "theta": self.theta[...], "gamma_log": self.gamma_log[...],
            "w_c": self.w_c[...], "w_glu": self.w_glu[...], "b_glu": self.b_glu[...]}

  def carry_fields(self) -> dict[str, int]:
    return {"h": 2 * self.state_size}

  def coefficients(self, pw, z):
    """(λ broadcast to [..., N], γ ⊙ (B x_t + b_B) [..., N]), complex."""
    n = self.state_size
    lam = jnp.exp(jax.lax.complex(-jnp.exp(pw["nu"]), jnp.exp(pw["theta"])))
    drive = jnp.exp(pw["gamma_log"]) * jax.lax.complex(z[..., :n], z[..., n:2 * n])
    return jnp.broadcast_to(lam, drive.shape), drive

  def unpack(self, h):
    n = self.state_size
    return jax.lax.complex(h[..., :n], h[..., n:])

  def pack(self, s):
    return jnp.concatenate([s.real, s.imag], axis=-1)

  def readout(self, pw, s, z):
    """out_t = GLU(GELU(Re(C s_t) + x_t W_D + b_D))."""
    u = jax.nn.gelu(self.pack(s) @ pw["w_c"] + z[..., 2 * self.state_size:])
    g = u @ pw["w_glu"] + pw["b_glu"]
    return g[..., :self.hidden_size] * jax.nn.sigmoid(g[..., self.hidden_size:])

  def step_pointwise(self, pw, z, zh, carry: Carry, probe=None):
    """`pointwise` alone (`ModelSpec` refuses the in-step axes for linear recurrences);
    `probe` [B, H] is added to the output out_t, so its gradient is dL/d out_t (the state is
    complex and 2N wide)."""
    new, y = self.pointwise(pw, z, zh, carry)
    return new, y if probe is None else y + probe
