"""Config: defaults, YAML partial overrides, key=value overrides, and errors that name what is wrong."""

from __future__ import annotations

import pytest

from othinklab.config import Config, GRPOConfig, load_config, parse_overrides, to_yaml
from othinklab.errors import ConfigError


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
