"""`from_torch`: torch's nn.RNN / LSTM / GRU as the outside reference for our cells."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch")

from rnn_research.interop import from_torch  # noqa: E402

B, T, F, H, P = 3, 7, 5, 4, 2
KINDS = {
    "rnn_tanh": lambda **kw: torch.nn.RNN(nonlinearity="tanh", **kw),
    "rnn_relu": lambda **kw: torch.nn.RNN(nonlinearity="relu", **kw),
    "lstm": torch.nn.LSTM,
    "lstm_proj": lambda **kw: torch.nn.LSTM(proj_size=P, **kw),  # LSTMP: h_t of width P
    "gru": torch.nn.GRU,
}


@pytest.fixture(autouse=True)
def _float32():
  old = torch.get_default_dtype()
  torch.set_default_dtype(torch.float32)
  yield
  torch.set_default_dtype(old)


def make(kind: str, num_layers: int = 1, batch_first: bool = True, bias: bool = True,
         seed: int = 0):
  """A torch module of `kind` with seeded random weights (and non-zero biases)."""
  torch.manual_seed(seed)
  module = KINDS[kind](input_size=F, hidden_size=H, num_layers=num_layers,
                       batch_first=batch_first, bias=bias)
  return module.eval()


def inputs(seed: int = 1) -> np.ndarray:
  return np.random.default_rng(seed).normal(size=(B, T, F)).astype(np.float32)


def torch_forward(module, xs: np.ndarray):
  """Torch's output as [B, T, H] for xs [B, T, F], whatever its batch_first."""
  x = torch.from_numpy(xs)
  if not module.batch_first:
    x = x.transpose(0, 1)
  out, _ = module(x)
  return out if module.batch_first else out.transpose(0, 1)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("num_layers", [1, 3])
@pytest.mark.parametrize("kind", list(KINDS))
def test_forward_matches_torch(kind, num_layers, batch_first, bias):
  module = make(kind, num_layers, batch_first, bias)
  xs = inputs()
  with torch.no_grad():
    expected = torch_forward(module, xs).numpy()
  ours = np.asarray(from_torch(module)(jnp.asarray(xs)))
  assert ours.shape == (B, T, P if kind == "lstm_proj" else H)
  np.testing.assert_allclose(ours, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", list(KINDS))
def test_streaming_step_matches_torch(kind):
  module = make(kind, num_layers=2)
  xs = inputs()
  with torch.no_grad():
    expected = torch_forward(module, xs).numpy()
  model = from_torch(module)
  state = model.initial_state(B)
  for t in range(T):
    state, y_t = model.step(state, jnp.asarray(xs[:, t]))
    np.testing.assert_allclose(np.asarray(y_t), expected[:, t], atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", list(KINDS))
def test_input_gradient_matches_torch(kind):
  module = make(kind, num_layers=2)
  xs = inputs()
  x = torch.from_numpy(xs).requires_grad_(True)
  out, _ = module(x)
  (out ** 2).sum().backward()
  expected = x.grad.numpy()
  model = from_torch(module)
  ours = jax.grad(lambda v: jnp.sum(model(v) ** 2))(jnp.asarray(xs))
  np.testing.assert_allclose(np.asarray(ours), expected, atol=1e-4, rtol=0)


def test_dropout_is_ignored_as_in_eval():
  torch.manual_seed(0)
  module = torch.nn.LSTM(F, H, num_layers=2, dropout=0.5, batch_first=True).eval()
  xs = inputs()
  with torch.no_grad():
    expected = torch_forward(module, xs).numpy()
  np.testing.assert_allclose(np.asarray(from_torch(module)(jnp.asarray(xs))), expected,
                             atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", list(KINDS))
def test_bidirectional_raises(kind):
  module = KINDS[kind](input_size=F, hidden_size=H, bidirectional=True)
  with pytest.raises(ValueError, match="bidirectional"):
    from_torch(module)


def test_projection_weights_and_their_gradients_match_torch():
  """LSTMP: W_p is torch's weight_hr transposed, and d loss / d W_p (every layer) matches."""
  module = make("lstm_proj", num_layers=2)
  xs = inputs()
  out, _ = module(torch.from_numpy(xs))
  (out ** 2).sum().backward()
  model = from_torch(module)
  assert model.layers[0].w_h.shape == (P, 4 * H) and model.layers[1].w_x.shape == (P, 4 * H)
  d_model = nnx.grad(lambda m: jnp.sum(m(jnp.asarray(xs)) ** 2))(model)
  for k in range(2):
    np.testing.assert_allclose(np.asarray(d_model["layers"][k]["w_p"][...]),
                               getattr(module, f"weight_hr_l{k}").grad.numpy().T, atol=1e-4,
                               rtol=0)


@pytest.mark.parametrize("module", [
    torch.nn.Linear(F, H), torch.nn.LSTMCell(F, H), torch.nn.GRUCell(F, H),
    torch.nn.RNNCell(F, H), "not a module"], ids=["linear", "lstm_cell", "gru_cell",
                                                  "rnn_cell", "str"])
def test_wrong_type_raises(module):
  with pytest.raises(ValueError, match="supports|expects"):
    from_torch(module)
