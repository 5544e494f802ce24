"""Declaring a sweep (`rnn_research.experiments.sweep_spec`): the member builders (sweep, seeds, product,
zipit and their dict shorthand), member names, applying overrides to a locked config, loading
a sweep file, command-line overrides for every member (`with_overrides`), and `check` reporting
every bad member in one SweepError before anything runs; random search (`random_search` and its
distributions, experiments/random_search.py).
"""
from __future__ import annotations

import math
import textwrap

import ml_collections
import numpy as np
import pytest
from scipy import stats

from configs import default
from rnn_research.training import train
from rnn_research.experiments.sweep_spec import (Sweep, SweepError, apply, check, load, member_names,
                                     product, seeds, sweep, with_overrides, zipit)
from rnn_research.sweep_spec import choice, integer, log_uniform, random_search, uniform


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


def test_get_sweep_may_take_the_arg(tmp_path):
  """A get_sweep(arg) gets the text after the colon (None without one), as get_config does."""
  path = write(tmp_path, '''
      from configs import default
      from rnn_research.experiments.sweep_spec import seeds

      def get_config(arg=None):
        return default.for_task("kalman", cell="gru", hidden_size=4, steps=4, batch_size=4)

      def get_sweep(arg):
        return seeds(3 if arg == "more" else 1)
      ''')
  assert len(load(path + ":more").members) == 3 and len(load(path).members) == 1


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


# ---------------------------------------------------------------------------- random search

SPACE = {"train.learning_rate": log_uniform(1e-4, 1e-1), "model.cell": choice(["lstm", "gru"]),
         "model.hidden_size": integer(16, 128), "model.dropout": uniform(0.0, 0.5)}


def test_random_search_is_deterministic_in_its_seed_and_extends():
  members = random_search(n=20, seed=0, space=SPACE)
  assert members == random_search(n=20, seed=0, space=SPACE)
  assert members != random_search(n=20, seed=1, space=SPACE)
  assert random_search(n=30, seed=0, space=SPACE)[:20] == members  # a larger n keeps them
  assert all(list(m) == list(SPACE) for m in members)  # keys in the order of the space


def test_random_search_draws_python_values_in_range():
  members = random_search(n=400, seed=3, space=SPACE)
  lrs = [m["train.learning_rate"] for m in members]
  sizes = [m["model.hidden_size"] for m in members]
  drops = [m["model.dropout"] for m in members]
  assert all(type(v) is float and 1e-4 <= v <= 1e-1 for v in lrs)
  assert all(type(v) is int for v in sizes) and {min(sizes), max(sizes)} == {16, 128}
  assert all(type(v) is float and 0.0 <= v <= 0.5 for v in drops)
  assert {m["model.cell"] for m in members} == {"lstm", "gru"}
  # floats rounded to 3 significant digits, so the name shows the value itself
  assert all(v == float(f"{v:.3g}") for v in lrs + drops)
  assert all(apply(base(), m).train.learning_rate == m["train.learning_rate"] for m in members[:5])
  exact = random_search(n=50, seed=3, space=SPACE, digits=None)
  assert any(v["train.learning_rate"] != float(f"{v['train.learning_rate']:.6g}") for v in exact)


def test_log_uniform_is_uniform_in_the_log():
  lo, hi = 1e-5, 1.0
  draws = [m["x"] for m in random_search(n=2000, seed=0, space={"x": log_uniform(lo, hi)},
                                         digits=None)]
  logs = (np.log(draws) - math.log(lo)) / (math.log(hi) - math.log(lo))
  assert stats.kstest(logs, "uniform").pvalue > 0.01
  assert stats.kstest(np.array(draws) / hi, "uniform").pvalue < 1e-10  # not uniform in x
  rounded = [m["x"] for m in random_search(n=500, seed=1, space={"x": log_uniform(lo, hi)})]
  assert stats.kstest((np.log(rounded) - math.log(lo)) / (math.log(hi) - math.log(lo)),
                      "uniform").pvalue > 0.01
  # integer(log=True): P(k <= K) = log(K + 1) / log(hi + 1); a second axis keeps repeats rare
  space = {"k": integer(1, 10_000, log=True), "u": uniform(0.0, 1.0)}
  ints = [m["k"] for m in random_search(n=2000, seed=0, space=space, digits=None)]
  edges = [1, 2, 10, 100, 1000, 10_001]
  counts, _ = np.histogram(ints, bins=edges)
  expected = np.diff(np.log(edges)) / math.log(10_001) * len(ints)
  assert stats.chisquare(counts, expected).pvalue > 0.01


def test_random_search_composes_with_seeds():
  points = random_search(n=4, seed=0, space=SPACE)
  members = product(points, seeds(3))
  assert len(members) == 12
  assert members[:3] == [{**points[0], "train.seed": s} for s in range(3)]
  names = member_names(members)
  assert len(set(names)) == 12
  assert names[0].startswith("learning_rate=") and names[0].endswith(",seed=0")
  check(sweep_of(members), lambda config: None)  # typed right, no duplicates


def test_random_search_names_never_collide():
  small = {"model.cell": choice(["rnn", "gru"]), "model.hidden_size": integer(1, 3)}
  members = random_search(n=6, seed=0, space=small)  # the whole space, in a drawn order
  assert sorted(member_names(members)) == sorted(member_names(product(
      {"model.cell": ["rnn", "gru"], "model.hidden_size": [1, 2, 3]})))
  narrow = random_search(n=2, seed=0, space={"x": uniform(1.0, 1.01)})  # 3 digits: 1 or 1.01
  assert len(set(member_names(narrow))) == 2
  with pytest.raises(SweepError, match=r"repeats in a row after 2 distinct members of n=3"):
    random_search(n=3, seed=0, space={"x": uniform(1.0, 1.01)})
  with pytest.raises(SweepError, match="repeats in a row"):  # both values are named a_b
    random_search(n=2, seed=0, space={"x": choice(["a/b", "a_b"])})


@pytest.mark.parametrize("build,match", [
    (lambda: uniform(1.0, 1.0), r"uniform\(lo, hi\) needs lo < hi"),
    (lambda: uniform(2, 1), r"needs lo < hi, got uniform\(2, 1\)"),
    (lambda: uniform("a", 1), "bounds must be finite numbers"),
    (lambda: uniform(0, math.inf), "bounds must be finite numbers"),
    (lambda: log_uniform(0.0, 1.0), r"log_uniform\(lo, hi\) needs 0 < lo < hi"),
    (lambda: log_uniform(-1, 1), "needs 0 < lo < hi"),
    (lambda: log_uniform(1e-2, 1e-3), "needs 0 < lo < hi"),
    (lambda: choice([]), "non-empty list"),
    (lambda: choice("ab"), "non-empty list"),
    (lambda: integer(3, 2), r"integer\(lo, hi\) needs lo <= hi"),
    (lambda: integer(1.5, 3), "needs int bounds"),
    (lambda: integer(0, 10, log=True), "1 <= lo <= hi with log=True"),
    (lambda: random_search(-1, 0, SPACE), "n >= 0"),
    (lambda: random_search(3, 1.5, SPACE), "int seed"),
    (lambda: random_search(3, 0, {}), "non-empty space"),
    (lambda: random_search(3, 0, {"a": [1, 2]}), r"'a': \[1, 2\] is not a distribution"),
    (lambda: random_search(3, 0, SPACE, digits=0), "digits >= 1 or None"),
    (lambda: random_search(7, 0, {"a": choice([1, 2]), "b": integer(1, 3)}),
     "n=7 but the space has only 6 distinct members"),
])
def test_random_search_rejects_bad_arguments_in_one_line(build, match):
  with pytest.raises(SweepError, match=match) as err:
    build()
  assert "\n" not in str(err.value)


def test_a_random_search_file_loads_the_same_members_twice(tmp_path):
  path = write(tmp_path, '''
      from configs import default
      from rnn_research.sweep_spec import log_uniform, product, random_search, seeds

      def get_config(arg=None):
        return default.for_task("kalman", cell="gru", hidden_size=4, steps=4, batch_size=4)

      def get_sweep():
        space = {"train.learning_rate": log_uniform(1e-4, 1e-1)}
        return product(random_search(n=5, seed=0, space=space), seeds(2))
      ''')
  first, again = load(path), load(path)
  assert (first.members, first.names) == (again.members, again.names)
  assert len(set(first.names)) == 10 and first.names[1].endswith(",seed=1")
