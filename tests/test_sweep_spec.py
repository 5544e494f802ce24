"""Declaring a sweep (`rnn_research.experiments.sweep_spec`): the member builders (sweep, seeds, product,
zipit and their dict shorthand), member names, applying overrides to a locked config, loading
a sweep file, command-line overrides for every member (`with_overrides`), and `check` reporting
every bad member in one SweepError before anything runs.
"""
from __future__ import annotations

import textwrap

import ml_collections
import pytest

from configs import default
from rnn_research.training import train
from rnn_research.experiments.sweep_spec import (Sweep, SweepError, apply, check, load, member_names,
                                     product, seeds, sweep, with_overrides, zipit)


def base() -> ml_collections.ConfigDict:
  config = default.for_task("kalman", cell="gru", hidden_size=4, steps=4, batch_size=4)
  config.task.length = 10
  config.task.eval_size = 8
  return config


def sweep_of(members: list[dict]) -> Sweep:
  return Sweep("test.py", base(), members, member_names(members), "")


# --------------------------------------------------------------------------------- builders


def test_sweep_one_member_per_value_in_order():
  assert sweep("model.norm", ["none", "layer", "batch"]) == [
      {"model.norm": "none"}, {"model.norm": "layer"}, {"model.norm": "batch"}]
  assert sweep("model.norm", []) == []
  assert sweep("train.seed", iter([3, 1])) == [{"train.seed": 3}, {"train.seed": 1}]


def test_seeds_counts_from_start():
  assert seeds(3) == [{"train.seed": 0}, {"train.seed": 1}, {"train.seed": 2}]
  assert seeds(2, start=5) == [{"train.seed": 5}, {"train.seed": 6}]
  assert seeds(0) == []


def test_product_is_every_combination_first_part_slowest():
  members = product(sweep("a", [1, 2]), sweep("b", ["x", "y", "z"]), seeds(2))
  assert len(members) == 2 * 3 * 2
  expected = [{"a": a, "b": b, "train.seed": s}
              for a in (1, 2) for b in ("x", "y", "z") for s in (0, 1)]
  assert members == expected
  # each member's keys are in the order of the parts
  assert all(list(m) == ["a", "b", "train.seed"] for m in members)


def test_product_of_multi_key_members_merges_them():
  clips = [{"train.clip": "none"}, {"train.clip": "value", "train.clip_value": 0.1}]
  members = product(clips, seeds(2))
  assert members == [
      {"train.clip": "none", "train.seed": 0},
      {"train.clip": "none", "train.seed": 1},
      {"train.clip": "value", "train.clip_value": 0.1, "train.seed": 0},
      {"train.clip": "value", "train.clip_value": 0.1, "train.seed": 1},
  ]


def test_zipit_pairs_members_by_index():
  members = zipit(sweep("a", [1, 2, 3]), sweep("b", ["x", "y", "z"]))
  assert members == [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}, {"a": 3, "b": "z"}]


def test_dict_shorthand_is_one_sweep_per_key():
  assert product({"a": [1, 2], "b": [3]}) == product(sweep("a", [1, 2]), sweep("b", [3]))
  assert zipit({"a": [1, 2], "b": [3, 4]}) == zipit(sweep("a", [1, 2]), sweep("b", [3, 4]))
  assert zipit({"a": [1, 2]}, seeds(2)) == [{"a": 1, "train.seed": 0},
                                           {"a": 2, "train.seed": 1}]


def test_concatenation_keeps_order():
  members = sweep("a", [1]) + product({"a": [2, 3]}, seeds(1))
  assert members == [{"a": 1}, {"a": 2, "train.seed": 0}, {"a": 3, "train.seed": 0}]


def test_zipit_length_mismatch_names_the_lengths():
  with pytest.raises(SweepError, match=r"equal length.*\[3, 2\]"):
    zipit(sweep("a", [1, 2, 3]), sweep("b", [1, 2]))
  with pytest.raises(SweepError, match="equal length"):
    zipit({"a": [1, 2], "b": [1]})


@pytest.mark.parametrize("build", [
    lambda: product(sweep("a", [1, 2]), sweep("a", [3])),
    lambda: zipit(sweep("a", [1]), {"a": [2]}),
    lambda: product([{"a": 1, "b": 2}], [{"b": 3}]),
])
def test_a_key_set_twice_in_one_member_raises(build):
  with pytest.raises(SweepError, match="set twice"):
    build()


# ------------------------------------------------------------------------------------ names


def test_names_use_the_last_part_of_each_key():
  members = product({"model.norm": ["none", "layer"]}, seeds(2))
  assert member_names(members) == ["norm=none,seed=0", "norm=none,seed=1",
                                   "norm=layer,seed=0", "norm=layer,seed=1"]


def test_names_keep_the_full_key_where_last_parts_clash():
  members = product({"model.dropout": [1], "train.dropout": [2], "model.cell": ["rnn"]})
  assert member_names(members) == ["model.dropout=1,train.dropout=2,cell=rnn"]
  # a clash anywhere in the sweep lengthens the key in every member
  members = [{"model.x": 1}, {"task.x": 2}, {"model.cell": "gru"}]
  assert member_names(members) == ["model.x=1", "task.x=2", "cell=gru"]


def test_names_format_bools_and_floats():
  members = [{"model.remat": True, "train.learning_rate": 1e-3},
             {"model.remat": False, "train.learning_rate": 0.5},
             {"model.remat": False, "train.learning_rate": 2.0}]
  assert member_names(members) == ["remat=true,learning_rate=0.001",
                                   "remat=false,learning_rate=0.5",
                                   "remat=false,learning_rate=2"]


def test_empty_overrides_are_named_base():
  assert member_names([{}, {"train.seed": 1}]) == ["base", "seed=1"]


def test_names_are_distinct_for_distinct_members_of_a_product():
  members = product({"model.cell": ["rnn", "gru"], "train.learning_rate": [0.1, 0.01]},
                    seeds(3))
  names = member_names(members)
  assert len(set(names)) == len(members) == 12


# ------------------------------------------------------------------------------------ apply


def test_apply_sets_values_and_leaves_base_alone():
  config = base()
  out = apply(config, {"model.cell": "rnn", "train.seed": 7, "model.remat": True,
                       "train.learning_rate": 0.5})
  assert (out.model.cell, out.train.seed, out.model.remat) == ("rnn", 7, True)
  assert out.train.learning_rate == 0.5
  assert (config.model.cell, config.train.seed) == ("gru", 0)  # a copy was changed
  with pytest.raises(AttributeError):  # locked: no new keys
    out.model.new_key = 1


def test_apply_promotes_int_to_float():
  out = apply(base(), {"train.learning_rate": 1})
  assert type(out.train.learning_rate) is float and out.train.learning_rate == 1.0


def test_apply_types_an_unset_key_by_its_placeholder():
  """train.eval_every is unset (None) until given; a sweep may set it, as an int only."""
  config = base()
  assert config.train.eval_every is None
  assert apply(config, {"train.eval_every": 5}).train.eval_every == 5
  with pytest.raises(SweepError, match="train.eval_every is int"):
    apply(config, {"train.eval_every": "5"})


def test_apply_rejects_unknown_key_naming_valid_ones():
  with pytest.raises(SweepError, match="unknown key 'model.cel'") as err:
    apply(base(), {"model.cel": "rnn"})
  assert "config.model has no 'cel'" in str(err.value)
  assert "'cell'" in str(err.value) and "'hidden_size'" in str(err.value)
  with pytest.raises(SweepError, match="the config has no 'modle'") as err:
    apply(base(), {"modle.cell": "rnn"})
  for section in ("model", "task", "train"):
    assert f"'{section}'" in str(err.value)


def test_apply_rejects_a_key_below_a_value():
  with pytest.raises(SweepError, match="unknown key 'model.cell.x'"):
    apply(base(), {"model.cell.x": 1})


@pytest.mark.parametrize("overrides,match", [
    ({"model.hidden_size": 4.0}, r"has type float.*hidden_size is int"),
    ({"model.hidden_size": "4"}, r"has type str.*hidden_size is int"),
    ({"model.cell": 3}, r"has type int.*cell is str"),
    ({"model.remat": 1}, r"has type int.*remat is bool"),
    ({"train.learning_rate": True}, r"has type bool.*learning_rate is float"),
    ({"train.seed": False}, r"has type bool.*seed is int"),
])
def test_apply_rejects_wrong_types(overrides, match):
  with pytest.raises(SweepError, match=match):
    apply(base(), overrides)


def test_apply_rejects_a_section_as_a_value():
  with pytest.raises(SweepError, match="model is a config section"):
    apply(base(), {"model": "rnn"})


@pytest.mark.parametrize("value", [[1, 2], (1,), {"a": 1}, None, ml_collections.ConfigDict()])
def test_apply_rejects_non_scalar_values(value):
  with pytest.raises(SweepError, match="must be bool, int, float or str"):
    apply(base(), {"model.hidden_size": value})


# ------------------------------------------------------------------- command-line overrides


def test_with_overrides_applies_typed_values_to_every_member():
  swp = sweep_of(product(sweep("model.cell", ["rnn", "lstm"]), seeds(2)))
  out = with_overrides(swp, ["train.steps=20", "train.learning_rate=0.01", "model.remat=true",
                             "train.clip=none"])
  assert out.overrides == ("train.steps=20", "train.learning_rate=0.01", "model.remat=true",
                           "train.clip=none")
  assert (out.members, out.names) == (swp.members, swp.names)
  for i in range(4):
    config = out.config(i)
    assert (config.train.steps, config.train.learning_rate) == (20, 0.01)
    assert type(config.train.steps) is int and config.model.remat is True
    assert config.train.clip == "none" and config.model.cell == swp.members[i]["model.cell"]
  assert swp.base.train.steps == 4 and swp.config(0).train.steps == 4  # swp is left alone
  assert with_overrides(swp, []) is swp


def test_with_overrides_refuses_a_key_that_a_member_sets_naming_them():
  swp = sweep_of(product(sweep("model.cell", ["rnn", "lstm"]), seeds(2)))
  with pytest.raises(SweepError) as err:
    with_overrides(swp, ["train.steps=20", "train.seed=5"])
  message = str(err.value)
  assert "train.seed is set by member(s) cell=rnn,seed=0, cell=rnn,seed=1, cell=lstm,seed=0, " \
         "cell=lstm,seed=1" in message
  assert "train.steps" not in message and "\n" not in message
  many = sweep_of(seeds(6))
  with pytest.raises(SweepError, match=r"seed=0, seed=1, seed=2, seed=3 and 2 more;"):
    with_overrides(many, ["train.seed=1"])


@pytest.mark.parametrize("text,match", [
    ("train.stpes=20", r"unknown key 'train.stpes': config.train has no 'stpes'; valid: .*'steps'"),
    ("modle.cell=rnn", r"unknown key 'modle.cell': the config has no 'modle'"),
    ("train.steps=many", r"bad config override: .*train.steps=many.*invalid literal for int"),
    ("train.steps", r"--config.train.steps: write a config override as --config.<key>=<value>"),
    ("train=3", r"train is a config section, not a value"),
])
def test_with_overrides_rejects_bad_overrides(text, match):
  with pytest.raises(SweepError, match=match):
    with_overrides(sweep_of(seeds(2)), ["train.steps=3", text])


# ------------------------------------------------------------------------------------- load


def write(tmp_path, text: str, name: str = "sweep_file.py") -> str:
  path = tmp_path / name
  path.write_text(textwrap.dedent(text))
  return str(path)


def test_load_missing_file(tmp_path):
  with pytest.raises(SweepError, match="no sweep file"):
    load(str(tmp_path / "nope.py"))
  with pytest.raises(SweepError, match="no sweep file"):
    load(str(tmp_path / "nope.py") + ":small")


@pytest.mark.parametrize("missing", ["get_sweep", "get_config"])
def test_load_file_without_a_function(tmp_path, missing):
  body = {"get_config": "def get_config(arg=None):\n  return None\n",
          "get_sweep": "def get_sweep():\n  return [{}]\n"}
  body.pop(missing)
  path = write(tmp_path, "".join(body.values()))
  with pytest.raises(SweepError, match=f"defines no {missing}"):
    load(path)


def test_load_rejects_a_member_that_is_not_a_dict(tmp_path):
  path = write(tmp_path, """
      def get_config(arg=None):
        return None
      def get_sweep():
        return [{"a": 1}, ("a", 2)]
      """)
  with pytest.raises(SweepError, match="member 1"):
    load(path)


def test_load_passes_arg_and_names_members(tmp_path):
  path = write(tmp_path, '''
      """A sweep for tests."""
      from configs import default
      from rnn_research.experiments.sweep_spec import product, seeds

      def get_config(arg=None):
        config = default.for_task("kalman", cell="gru", hidden_size=4, steps=4, batch_size=4)
        config.unlock()
        config.task.name_arg = repr(arg)
        return config

      def get_sweep():
        return product({"model.cell": ["rnn", "gru"]}, seeds(2))
      ''')
  swp = load(path + ":wide")
  assert swp.config_arg == path + ":wide"
  assert swp.base.task.name_arg == "'wide'"
  assert swp.doc == "A sweep for tests."
  assert swp.names == ["cell=rnn,seed=0", "cell=rnn,seed=1", "cell=gru,seed=0",
                       "cell=gru,seed=1"]
  assert swp.members[2] == {"model.cell": "gru", "train.seed": 0}
  assert swp.config(2).model.cell == "gru" and swp.config(1).train.seed == 1
  assert load(path).base.task.name_arg == "None"  # no arg: get_config(None)


# ------------------------------------------------------------------------------------ check


def test_check_passes_good_members():
  swp = sweep_of(product({"model.cell": ["rnn", "lstm"]}, seeds(2)))
  check(swp, train.init_state)  # raises nothing


def test_check_reports_every_bad_member_at_once():
  members = [{"model.cell": "rnn"},            # 0 fine
             {"model.cel": "rnn"},             # 1 unknown key
             {"model.cell": "nope"},           # 2 bad value
             {"model.cell": "gru"},            # 3 fine
             {"model.cell": "rnn"},            # 4 same as 0
             {"train.batch_size": 0}]          # 5 invalid training value
  swp = sweep_of(members)
  with pytest.raises(SweepError) as err:
    check(swp, train.init_state)
  text = str(err.value)
  assert "4 of 6 member(s) are invalid" in text
  assert "member 1 (cel=rnn)" in text and "unknown key" in text
  assert "member 2 (cell=nope)" in text and "nope" in text
  assert "member 4 (cell=rnn): same overrides as member 0" in text
  assert "member 5 (batch_size=0)" in text and "batch_size" in text
  assert "member 0 " not in text and "member 3 " not in text
  assert len([line for line in text.splitlines() if line.startswith("  member")]) == 4


def test_check_of_no_members_fails():
  with pytest.raises(SweepError, match="no members"):
    check(sweep_of([]), train.init_state)
