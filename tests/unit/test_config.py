import pytest

from pefty_whisper.config import Config, dump_config, load_config
from pefty_whisper.errors import ConfigError


def test_defaults_without_file_or_overrides():
    config = load_config()
    assert config == Config()
    assert config.lora.r == 32 and config.lora.alpha == 64
    assert config.model.quant == "8bit"
    assert config.data.normalize == "spelling"


def test_yaml_file_then_overrides(tmp_path):
    path = tmp_path / "pefty.yaml"
    path.write_text("train:\n  learning_rate: 3.0e-4\n  batch_size: 4\nmodel:\n  quant: 4bit\n")
    config = load_config(path, ["train.batch_size=16", "lora.target_modules=q_proj,v_proj"])
    assert config.train.learning_rate == pytest.approx(3e-4)
    assert config.train.batch_size == 16
    assert config.model.quant == "4bit"
    assert config.lora.target_modules == ("q_proj", "v_proj")


def test_scientific_notation_without_dot_is_a_float():
    # PyYAML reads `1e-4` as a string; the config must still take it as a number.
    assert load_config(None, ["train.learning_rate=1e-4"]).train.learning_rate == pytest.approx(
        1e-4
    )


def test_int_is_accepted_for_float():
    assert load_config(None, ["data.test_ratio=0"]).data.test_ratio == 0.0


def test_unknown_key_names_the_closest_valid_key():
    with pytest.raises(ConfigError, match=r"'train\.learnig_rate'.*'train\.learning_rate'"):
        load_config(None, ["train.learnig_rate=1e-3"])


def test_unknown_section_names_the_closest_section(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("trian:\n  batch_size: 4\n")
    with pytest.raises(ConfigError, match=r"'trian'.*'train'"):
        load_config(path)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.batch_size=eight", "must be an integer"),
        ("train.batch_size=2.5", "must be an integer"),
        ("train.gradient_checkpointing=maybe", "true or false"),
        ("train.learning_rate=fast", "must be a number"),
        ("model.quant=8-bit", "one of 8bit, 4bit, none.*'8bit'"),
        ("data.normalize=spellin", "Did you mean 'spelling'"),
    ],
)
def test_wrong_types_are_rejected(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_malformed_override():
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(None, ["learning_rate"])


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_dump_and_reload_round_trip(tmp_path):
    config = load_config(None, ["train.max_steps=7", "lora.target_modules=q_proj"])
    dump_config(config, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == config


def test_context_step_must_be_a_positive_number_of_seconds() -> None:
    with pytest.raises(ConfigError, match=r"'model.context_step_s' must be between 0 and 30"):
        load_config(overrides=["model.context_step_s=0"])
    assert load_config(overrides=["model.context=auto"]).model.context == "auto"
