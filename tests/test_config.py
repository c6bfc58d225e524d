from pathlib import Path

import pytest

from tuneloop.config import ConfigError, RunConfig, config_from_dict, load_config

REPO = Path(__file__).resolve().parents[1]


# The examples and the presets the package ships (configs/accelerate/ holds accelerate's own configs).
SHIPPED = sorted({*REPO.glob("examples/**/*.yaml"), *REPO.glob("src/tuneloop/presets/*/*.yaml")})


@pytest.mark.parametrize("yaml_path", SHIPPED, ids=lambda p: str(p.relative_to(REPO)))
def test_every_shipped_yaml_loads(yaml_path):
    config = load_config(yaml_path)
    assert config.data.path.exists(), f"{yaml_path} points at missing data {config.data.path}"


def test_minimal_config_gets_defaults():
    config = config_from_dict({"data": {"path": "x.jsonl"}})
    assert config.model == "smollm2-135m-instruct"
    assert config.lora.r == 16 and config.train.epochs == "auto" and config.train.batch_size == "auto"


@pytest.mark.parametrize(
    "raw, expected",
    [
        (
            {"data": {"path": "x"}, "train": {"learning_rte": 1e-4}},
            "train.learning_rte: unknown key (did you mean 'learning_rate'?)",
        ),
        ({"data": {"path": "x"}, "lroa": {}}, "lroa: unknown key (did you mean 'lora'?)"),
        ({"data": {"path": "x"}, "train": {"epochs": -1}}, "train.epochs: Input should be greater than 0"),
        ({"data": {"path": "x"}, "train": {"scheduler": "exp"}}, "train.scheduler: Input should be"),
        ({"data": {"path": "x", "validation_size": 0.45, "test_size": 0.4}}, "at least 20% for training"),
        ({}, "data: Field required"),
    ],
)
def test_invalid_configs_name_the_key(raw, expected):
    with pytest.raises(ConfigError) as e:
        config_from_dict(raw, source="my.yaml")
    assert "my.yaml" in str(e.value) and expected in str(e.value)


def test_overrides_and_relative_paths(tmp_path):
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "c.yaml"
    path.write_text("data:\n  path: d.jsonl\ntrain:\n  epochs: 2\n")
    config = load_config(path, ["train.epochs=3", "lora.r=8", "train.learning_rate=1e-4"])
    assert (config.train.epochs, config.lora.r, config.train.learning_rate) == (3, 8, 1e-4)
    assert config.data.path == tmp_path / "sub" / "d.jsonl"
    assert config.run_name == "c"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("data: [unclosed", "not valid YAML"),
        ("- a\n- b\n", "expected a mapping"),
    ],
)
def test_unreadable_config_files(tmp_path, text, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=expected):
        load_config(path)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_bad_override_syntax(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  path: d.jsonl\n")
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config(path, ["train.epochs"])


def test_schema_round_trips():
    config = config_from_dict({"data": {"path": "x.jsonl"}, "lora": {"target_modules": ["q_proj", "v_proj"]}})
    assert RunConfig.model_validate(config.model_dump(mode="json")) == config


def test_yaml_off_means_off(tmp_path):
    (tmp_path / "c.yaml").write_text("data: {path: x.jsonl}\ntrain: {doctor: off}\n")  # YAML 1.1 reads off as false
    assert load_config(tmp_path / "c.yaml").train.doctor == "off"
