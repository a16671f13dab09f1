"""Config: defaults, YAML partial overrides, key=value overrides, and errors that name what is wrong;
property-based: any override list, override text, YAML document or file bytes ends in a Config or a UserError."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st
from property_strategies import FAST, SCALARS

from othinklab.config import Config, GRPOConfig, load_config, parse_overrides, to_yaml
from othinklab.errors import ConfigError, UserError


def field_docs(section_cls: type) -> dict[str, str]:
    """Field name -> its docstring, read from the source: every config field must carry one."""
    import ast
    import inspect
    import textwrap

    tree = ast.parse(textwrap.dedent(inspect.getsource(section_cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, nxt in zip(body, body[1:] + [None]):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            if isinstance(nxt, ast.Expr) and isinstance(getattr(nxt, "value", None), ast.Constant):
                docs[node.target.id] = " ".join(str(nxt.value.value).split())
    return docs


def test_defaults_and_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("kl:\n  schedule: constant\n  beta: 0.01\ntrain:\n  total_steps: 7\n")
    cfg = load_config(f, ["grpo.num_generations=4", "model.lora_target_modules=q_proj,v_proj"])
    assert cfg.kl.schedule == "constant" and cfg.kl.beta == 0.01
    assert cfg.train.total_steps == 7 and cfg.grpo.num_generations == 4
    assert cfg.model.lora_target_modules == ("q_proj", "v_proj")
    assert cfg.grpo.epsilon == Config().grpo.epsilon  # untouched fields keep defaults


def test_round_trip_yaml(tmp_path):
    cfg = load_config(None, ["kl.beta_max=0.2", "train.seed=3"])
    f = tmp_path / "resolved.yaml"
    f.write_text(to_yaml(cfg))
    assert load_config(f) == cfg


@pytest.mark.parametrize(
    "text, needle",
    [
        ("kl:\n  shedule: grpo_d\n", "did you mean 'schedule'"),
        ("klx:\n  beta: 0.1\n", "unknown section 'klx'"),
        ("kl:\n  beta: -0.1\n", "kl.beta=-0.1"),
        ("kl:\n  explore_frac: 1.5\n", "kl.explore_frac=1.5"),
        ("grpo:\n  num_generations: 1\n", "grpo.num_generations=1"),
        ("grpo:\n  num_generations: two\n", "grpo.num_generations='two' must be an integer"),
        ("kl:\n  schedule: fancy\n", "kl.schedule='fancy'"),
        ("kl: [1, 2]\n", "section 'kl' must be a mapping"),
        ("kl:\n  beta: [0.1\n", "not valid YAML"),
        ("model:\n  load_in_4bit: true\n  lora: false\n", "4-bit weights need lora"),
    ],
)
def test_bad_yaml_names_file_field_value(tmp_path, text, needle):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_config(f)
    assert needle in str(exc.value)
    assert "bad.yaml" in str(exc.value)


def test_bad_overrides():
    with pytest.raises(ConfigError, match="section.field=value"):
        load_config(None, ["beta=0.1"])
    with pytest.raises(ConfigError, match="did you mean 'learning_rate'"):
        load_config(None, ["train.learning_rat=0.1"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("/nonexistent/x.yaml")


def test_parse_overrides_types():
    assert parse_overrides(["a.b=1", "a.c=0.5", "d.e=true", "d.f=text"]) == {
        "a": {"b": 1, "c": 0.5},
        "d": {"e": True, "f": "text"},
    }


def test_every_field_is_documented():
    import dataclasses

    for section in dataclasses.fields(Config):
        cls = type(getattr(Config(), section.name))
        docs = field_docs(cls)
        missing = [f.name for f in dataclasses.fields(cls) if not docs.get(f.name)]
        assert not missing, f"{cls.__name__} fields without a docstring: {missing}"
    assert "group size" in field_docs(GRPOConfig)["num_generations"]


def test_shipped_configs_load():
    from pathlib import Path

    files = sorted(Path(__file__).parent.parent.glob("configs/*.yaml"))
    assert len(files) >= 8
    for f in files:
        cfg = load_config(f)
        assert f.read_text().startswith("#"), f"{f.name} must open with a comment on what differs and why"
        assert cfg.train.total_steps > 0


KEYS = ["kl.beta", "kl.schedule", "train.total_steps", "model.lora", "model.name", "train.run_name", "grpo.top_p"]


KEYS += ["model.lora_target_modules", "train.learning_rate", "task.num_eval", "nosuch.field", "kl", "kl.", ".x"]


YAML_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


YAML_SNIPPETS = st.sampled_from(
    [
        "&a [1, 2]",
        "*a",
        "!!python/object:os.system {}",
        "{",
        "[",
        "? [a]: 1",
        ".inf",
        ".nan",
        "~",
        "'\x00'",
        "!!binary aGk=",
    ]
)


def _ends_in_value_or_user_error(fn, *args) -> None:
    try:
        fn(*args)
    except UserError as exc:
        assert str(exc), "a UserError must say what is wrong"
        assert len(str(exc)) < 3000


@FAST
@given(st.lists(st.tuples(st.sampled_from(KEYS), st.one_of(st.text(max_size=40), YAML_SNIPPETS)), max_size=4))
def test_overrides_end_in_a_config_or_a_user_error(pairs):
    items = [f"{k}={v}" for k, v in pairs]
    _ends_in_value_or_user_error(parse_overrides, items)
    try:
        cfg = load_config(None, items)
    except UserError:
        return
    assert isinstance(cfg, Config)


@FAST
@given(st.text(max_size=40))
def test_any_override_text_ends_in_a_value_or_a_user_error(text):
    _ends_in_value_or_user_error(load_config, None, [text])


@FAST
@given(
    st.one_of(
        st.dictionaries(
            st.sampled_from(["kl", "train", "model", "grpo", "oops", "task"]),
            st.one_of(
                st.dictionaries(st.sampled_from(["beta", "total_steps", "lora", "name", "x"]), YAML_VALUES), SCALARS
            ),
            max_size=3,
        ),
        YAML_VALUES,
    )
)
def test_any_yaml_document_ends_in_a_config_or_a_user_error(tmp_path_factory, document):
    import yaml

    f = tmp_path_factory.mktemp("cfg") / "c.yaml"
    f.write_text(yaml.safe_dump(document))
    _ends_in_value_or_user_error(load_config, f)


@FAST
@given(st.binary(max_size=200) | st.text(alphabet=string.printable + "&*![]{}:\u2028\ufeff", max_size=200))
def test_any_config_file_bytes_end_in_a_config_or_a_user_error(tmp_path_factory, data):
    f = tmp_path_factory.mktemp("cfg") / "c.yaml"
    f.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    _ends_in_value_or_user_error(load_config, f)


def test_direct_prompt_needs_format_weight_zero():
    with pytest.raises(ConfigError, match="format_weight"):
        load_config(None, ["task.prompt=direct"])
