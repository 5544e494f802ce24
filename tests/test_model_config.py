"""`config.model`: defaults, the locked default config, and bad values failing loudly with the
valid choices named (at build time, or at call time for inputs)."""
from __future__ import annotations

import importlib.util
import pathlib

import jax.numpy as jnp
import ml_collections
import pytest
from flax import nnx

from rnn_research.core import models
from rnn_research.core.spec import ModelSpec, model_defaults, resolve

F, H = 2, 3
DEFAULT_CONFIG = pathlib.Path(__file__).resolve().parents[1] / "configs" / "default.py"


def get_config():
  """configs/default.py's get_config, loaded by path (as --config=configs/default.py does), so
  the test does not depend on the repository root being on sys.path."""
  spec = importlib.util.spec_from_file_location("_default_config", DEFAULT_CONFIG)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def build(out_features=1, in_features=F, **cfg):
  return models.build({"hidden_size": H, **cfg}, in_features=in_features,
                      out_features=out_features, rngs=nnx.Rngs(0))


@pytest.mark.parametrize("cfg,pattern,choices", [
    (dict(cell="lstmm"), "unknown cell 'lstmm'", ("rnn", "lstm", "gru")),
    (dict(cell="lstm", lstm_variant="vanilla"), "unknown lstm_variant 'vanilla'",
     ("standard", "lecture", "peephole", "nig", "nfg", "nog", "niaf", "noaf", "np", "cifg",
      "fgr")),
    (dict(activation="swish"), "unknown activation 'swish'",
     ("tanh", "sigmoid", "relu", "identity", "hard_tanh", "gelu", "softsign", "leaky_relu")),
    (dict(cell="gru", activation="Tanh"), "unknown activation 'Tanh'", ("tanh",)),
    (dict(recurrent_init="xavier"), "unknown recurrent_init 'xavier'",
     ("orthogonal", "identity", "normal", "lecun")),
    (dict(engine="cudnn_fast"), "unknown engine 'cudnn_fast'",
     ("auto", "scan", "scan_hoisted", "vjp", "vjp_hoisted", "associative", "cudnn")),
    (dict(execution="depth_first"), "unknown execution 'depth_first'",
     ("layer_major", "time_major")),
    (dict(readout="attention"), "unknown readout 'attention'", ("linear", "mlp")),
    (dict(cell="rnn", transition="gru"), "unknown transition 'gru'", ("linear", "mlp")),
])
def test_unknown_choice_names_valid_choices(cfg, pattern, choices):
  with pytest.raises(ValueError, match=pattern) as info:
    build(**cfg)
  message = str(info.value)
  assert "valid choices" in message
  for choice in choices:
    assert choice in message


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_mlp_transition_is_rnn_only(cell):
  with pytest.raises(ValueError, match=r"transition='mlp' is defined for cell='rnn' only"):
    build(cell=cell, transition="mlp")
  assert build(cell="rnn", transition="mlp", mlp_hidden=4).layers[0].mlp


@pytest.mark.parametrize("variant", ["standard", "peephole", "cifg"])
def test_lecture_peephole_needs_lecture_variant(variant):
  with pytest.raises(ValueError, match="lecture_peephole=True needs lstm_variant='lecture'"):
    build(cell="lstm", lstm_variant=variant, lecture_peephole=True)
  assert build(cell="lstm", lstm_variant="lecture", lecture_peephole=True).layers[0].lecture_peephole


def test_unknown_key_lists_valid_keys():
  with pytest.raises(ValueError, match=r"unknown config.model key\(s\) \['hiden_size'\]") as info:
    build(hiden_size=4)
  message = str(info.value)
  assert "valid keys" in message
  for key in model_defaults().keys():
    assert key in message
  with pytest.raises(ValueError, match=r"\['a', 'b'\]"):
    resolve({"b": 1, "a": 2, "cell": "gru"})


@pytest.mark.parametrize("key", ["hidden_size", "num_layers", "mlp_hidden", "readout_hidden"])
@pytest.mark.parametrize("value", [0, -1])
def test_sizes_must_be_positive_integers(key, value):
  with pytest.raises(ValueError, match=f"config.model.{key} must be a positive integer"):
    build(**{key: value})


def test_backward_chunk_must_be_auto_or_positive():
  with pytest.raises(ValueError, match=r"backward_chunk must be 0 \(auto\) or a positive"):
    build(backward_chunk=-1)


@pytest.mark.parametrize("key", ["hidden_size", "num_layers"])
def test_sizes_reject_bools(key):
  # (Message wording is "a positive integer" or "an integer" depending on which check fires.)
  with pytest.raises(ValueError, match=f"config.model.{key} must be (a positive|an) integer"):
    build(**{key: True})


@pytest.mark.parametrize("in_features", [0, -2, 2.0, None])
def test_in_features_must_be_positive_integer(in_features):
  with pytest.raises(ValueError, match="in_features must be a positive integer"):
    build(in_features=in_features)


def test_out_features_must_be_positive_or_none():
  with pytest.raises(ValueError, match="out_features"):
    build(out_features=0)


def test_unknown_readout_fails_without_readout_too():
  with pytest.raises(ValueError, match="unknown readout 'atention'"):
    build(out_features=None, readout="atention")


def test_wrong_input_feature_size_fails_at_call():
  model = build()
  with pytest.raises(ValueError, match=r"inputs must be \[batch, time, 2\], got shape \(2, 4, 3\)"):
    model(jnp.ones((2, 4, F + 1)))
  with pytest.raises(ValueError, match=r"inputs must be \[batch, time, 2\], got shape \(4, 2\)"):
    model(jnp.ones((4, F)))
  with pytest.raises(ValueError, match=r"step input must be \[batch, 2\], got shape \(2, 3\)"):
    model.step(model.initial_state(2), jnp.ones((2, F + 1)))
  with pytest.raises(ValueError, match=r"step input must be \[batch, 2\]"):
    model.step(model.initial_state(2), jnp.ones((2, 1, F)))


@pytest.mark.parametrize("shape", [(2, 5), (3, 4), (4,), (2, 4, 1)])
def test_wrong_mask_shape_fails_at_call(shape):
  model = build()
  with pytest.raises(ValueError, match=r"mask must be \[batch, time\] = \(2, 4\), got shape"):
    model(jnp.ones((2, 4, F)), jnp.ones(shape, bool))


def test_wrong_step_mask_shape_fails_with_clear_message():
  model = build()
  with pytest.raises(ValueError, match="mask"):
    model.step(model.initial_state(2), jnp.ones((2, F)), jnp.ones((3,), bool))


def test_resolve_overlays_defaults():
  cfg = resolve({"cell": "gru", "hidden_size": 7})
  assert isinstance(cfg, ModelSpec)
  assert cfg.cell == "gru" and cfg.hidden_size == 7
  defaults = model_defaults()
  for key in defaults.keys():
    if key not in ("cell", "hidden_size"):
      assert getattr(cfg, key) == defaults[key]
  assert ModelSpec.from_config(cfg) == cfg and resolve(cfg.replace(num_layers=2)).num_layers == 2
  # A ConfigDict works as well as a dict, and resolve does not mutate its input.
  given = ml_collections.ConfigDict({"cell": "rnn"})
  assert resolve(given).cell == "rnn" and set(given.keys()) == {"cell"}
  with pytest.raises(AttributeError):  # frozen
    cfg.hidden_size = 3
  assert type(resolve({"forget_bias": 2}).forget_bias) is float  # coerced to the field's type


def test_spec_is_typed_and_owns_the_choices():
  """Every field has a type; a Literal field's choices are exactly what the spec accepts."""
  import dataclasses
  import typing
  from rnn_research.core import choices
  hints = typing.get_type_hints(ModelSpec)
  context = {"eval_norm_stats": {"norm": "layer"}, "transition": {"cell": "rnn"},
             "engine": {"cell": "min_gru"}, "norm": {"num_layers": 2}}  # the rules' other keys
  assert {f.name for f in dataclasses.fields(ModelSpec)} == set(model_defaults().keys())
  for name, kind in hints.items():
    if typing.get_origin(kind) is typing.Literal:
      for value in choices.valid(kind):
        extra = {} if value == "cudnn" else context.get(name, {})  # cudnn: the plain LSTM
        assert getattr(resolve({name: value, **extra}), name) == value
      with pytest.raises(ValueError, match=f"unknown {name} 'bogus'; valid choices"):
        resolve({name: "bogus"})


def test_model_defaults_are_fresh_and_valid():
  a = model_defaults()
  a.hidden_size = 1
  assert model_defaults().hidden_size == 64
  model = models.build(model_defaults(), in_features=F, out_features=1, rngs=nnx.Rngs(0))
  assert model.layers[0].hidden_size == 64


def test_default_config_is_locked_and_complete():
  config = get_config()
  assert set(config.model.keys()) == set(model_defaults().keys())
  resolve(config.model)  # every value valid
  with pytest.raises((AttributeError, KeyError), match="hiden_size"):
    config.model.hiden_size = 4
  with pytest.raises((AttributeError, KeyError)):
    config.modle = ml_collections.ConfigDict()
  # Known keys stay settable (overrides), with type checks.
  config.model.hidden_size = 8
  assert config.model.hidden_size == 8
  with pytest.raises(TypeError):
    config.model.hidden_size = "eight"
  # And the default model section builds.
  small = ml_collections.ConfigDict(config.model.to_dict())
  small.hidden_size = H
  assert models.build(small, in_features=F, out_features=None, rngs=nnx.Rngs(0))(
      jnp.ones((1, 2, F))).shape == (1, 2, H)
