"""Activation functions σ of eq. 13.1 (lecture 2.1.1: saturating vs not), by name."""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from rnn_research.core.registry import Registry

Activation = Callable[[jax.Array], jax.Array]
ACTIVATIONS: Registry[Activation] = Registry("activation")

# Saturating: |σ'(a)| -> 0 as |a| -> inf, the "brake" on explosion (lecture 2.1.1).
ACTIVATIONS.register("tanh")(jnp.tanh)
ACTIVATIONS.register("sigmoid")(jax.nn.sigmoid)
ACTIVATIONS.register("hard_tanh")(jax.nn.hard_tanh)
ACTIVATIONS.register("softsign")(jax.nn.soft_sign)
# Non-saturating: unbounded above, so a recurrence with gain > 1 can run off to infinity.
ACTIVATIONS.register("relu")(jax.nn.relu)
ACTIVATIONS.register("leaky_relu")(jax.nn.leaky_relu)
ACTIVATIONS.register("gelu")(jax.nn.gelu)
ACTIVATIONS.register("elu")(jax.nn.elu)
ACTIVATIONS.register("softplus")(jax.nn.softplus)
# σ(a) = a: a linear RNN, i.e. a fixed-gain (steady-state) Kalman filter.
ACTIVATIONS.register("identity")(lambda a: a)
