import pytest

from pefty_whisper.config import Config, dump_config, load_config
from pefty_whisper.config.reference import config_reference, field_docs
from pefty_whisper.config.validation import all_keys
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


def test_every_error_of_a_file_is_reported_at_once(tmp_path):
    path = tmp_path / "pefty.yaml"
    path.write_text(
        "train:\n  learnig_rate: 1.0e-3\n  batch_size: eight\n"
        "model:\n  quant: 8-bit\n  lenguage: ko\n"
    )
    with pytest.raises(ConfigError) as error:
        load_config(path)
    lines = str(error.value).splitlines()
    assert lines[0] == f"4 config errors in {path}:"
    assert len(lines) == 5
    text = str(error.value)
    assert "'train.learnig_rate'. Did you mean 'train.learning_rate'?" in text
    assert "'model.lenguage'. Did you mean 'model.language'?" in text
    assert "'train.batch_size' must be an integer" in text
    assert "'model.quant' must be one of 8bit, 4bit, none" in text


def test_errors_of_the_file_and_the_overrides_are_reported_together(tmp_path):
    path = tmp_path / "pefty.yaml"
    path.write_text("trian:\n  batch_size: 4\n")
    with pytest.raises(ConfigError) as error:
        load_config(path, ["model.context_step_s=0", "train.seed=x"])
    lines = str(error.value).splitlines()
    assert lines[0] == "3 config errors:"
    assert any("'trian'" in line for line in lines[1:])
    assert any("'model.context_step_s' must be between 0 and 30" in line for line in lines[1:])
    assert any("'train.seed' must be an integer" in line for line in lines[1:])


def test_max_steps_is_null_unless_set_and_never_minus_one(tmp_path):
    assert load_config().train.max_steps is None
    assert load_config(None, ["train.max_steps=null"]).train.max_steps is None
    assert load_config(None, ["train.max_steps=12"]).train.max_steps == 12
    path = tmp_path / "pefty.yaml"
    path.write_text("train:\n  max_steps: -1\n")
    positive = r"'train.max_steps' must be a positive integer or null \(use num_epochs\); got -1"
    with pytest.raises(ConfigError, match=positive):
        load_config(path)
    with pytest.raises(ConfigError, match="'train.max_steps' must be an integer"):
        load_config(None, ["train.max_steps=many"])
    # The default (null) survives the dump written beside every adapter.
    dump_config(load_config(), tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml").train.max_steps is None


def test_every_field_has_a_docstring_and_the_reference_names_every_key():
    import dataclasses
    import typing

    for section in dataclasses.fields(Config):
        section_type = typing.get_type_hints(Config)[section.name]
        docs = field_docs(section_type)
        for field in dataclasses.fields(section_type):
            assert docs.get(field.name, "").strip(), f"{section.name}.{field.name}: no docstring"
    reference = config_reference()
    for key in all_keys(Config):
        assert f"  {key}: " in reference, key
    assert "  train.max_steps: int or null = null" in reference
    assert "  model.quant: 8bit | 4bit | none = 8bit" in reference
    assert "  lora.target_modules: list of strings = [q_proj, k_proj" in reference


def test_pefty_config_prints_the_reference_and_lists_every_bad_key(tmp_path):
    from click.testing import CliRunner

    from pefty_whisper.cli import main

    result = CliRunner().invoke(main, ["config", "--workdir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert result.output == config_reference()
    (tmp_path / "pefty.yaml").write_text("train:\n  max_steps: -1\n  batch_sise: 4\n")
    result = CliRunner().invoke(main, ["config", "--workdir", str(tmp_path)])
    assert result.exit_code == 1
    assert "2 config errors in" in result.output and "Traceback" not in result.output
    assert "'train.max_steps' must be a positive integer" in result.output
    assert "Did you mean 'train.batch_size'?" in result.output


def test_report_to_takes_one_tracker_a_list_or_none(tmp_path):
    assert load_config().train.report_to == ("tensorboard",)
    assert load_config(None, ["train.report_to=mlflow,wandb"]).train.report_to == (
        "mlflow",
        "wandb",
    )
    path = tmp_path / "pefty.yaml"
    path.write_text("train:\n  report_to: [tensorboard, wandb]\n")
    assert load_config(path).train.report_to == ("tensorboard", "wandb")
    with pytest.raises(ConfigError, match="takes tensorboard, mlflow, wandb, none.*'mlflow'"):
        load_config(None, ["train.report_to=mlfow"])
    with pytest.raises(ConfigError, match="none cannot go with other reporters"):
        load_config(None, ["train.report_to=none,wandb"])
