"""The configuration: params.yaml, overridden by environment variables, then by CLI options."""

from __future__ import annotations

import json

import pytest
import yaml
from helpers import config_variables

from core.config import DEFAULT_PARAMS_FILE, ConfigError, describe, env_name, load_params, masked


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in config_variables():
        monkeypatch.delenv(name, raising=False)


def write_params(path, **changes) -> str:
    """A copy of params.yaml with some top-level sections changed."""
    params = yaml.safe_load(DEFAULT_PARAMS_FILE.read_text())
    for section, values in changes.items():
        params[section].update(values)
    path.write_text(yaml.safe_dump(params))
    return str(path)


def test_env_name_is_the_dotted_path_in_upper_case_with_underscores():
    assert env_name("data.image_size") == "DATA_IMAGE_SIZE"
    assert env_name("gate.min_accuracy") == "GATE_MIN_ACCURACY"
    assert env_name("dataset_uri") == "DATASET_URI"
    assert env_name("some-section.max-value") == "SOME_SECTION_MAX_VALUE"


def test_every_params_leaf_has_its_own_environment_variable():
    params = yaml.safe_load(DEFAULT_PARAMS_FILE.read_text())
    leaves = []

    def walk(tree, prefix=""):
        for key, value in tree.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            else:
                leaves.append(f"{prefix}{key}")

    walk(params)
    names = [env_name(leaf) for leaf in leaves]
    assert len(names) == len(set(names)), "two params keys map to the same environment variable"
    for documented in ("DATASET_URI", "REGISTRY_URI", "API_HOST", "API_PORT", "SMTP_HOST", "SMTP_PORT",
                       "SMTP_USER", "SMTP_PASSWORD", "SMTP_STARTTLS", "OUTBOX_DIR", "NOTIFY_TO", "NOTIFY_FROM"):
        assert documented in names, f"{documented} (DESIGN.md) does not override any params.yaml key"


def test_defaults_come_from_params_yaml():
    params = load_params(environ={})
    expected = yaml.safe_load(DEFAULT_PARAMS_FILE.read_text())
    assert params == expected


@pytest.mark.parametrize(
    ("variable", "raw", "path", "expected"),
    [
        ("DATA_IMAGE_SIZE", "64", ("data", "image_size"), 64),
        ("TRAIN_LEARNING_RATE", "0.01", ("train", "learning_rate"), 0.01),
        ("GATE_MIN_ACCURACY", "1", ("gate", "min_accuracy"), 1.0),
        ("SMTP_STARTTLS", "false", ("smtp", "starttls"), False),
        ("SMTP_STARTTLS", "true", ("smtp", "starttls"), True),
        ("CLASSES", "A,B,C", ("classes",), ["A", "B", "C"]),
        ("CLASSES", "COVID, Viral Pneumonia", ("classes",), ["COVID", "Viral Pneumonia"]),
        ("CLASSES", "[COVID, Normal]", ("classes",), ["COVID", "Normal"]),
        ("API_HOST", "0.0.0.0", ("api", "host"), "0.0.0.0"),
        ("DATASET_URI", "/tmp/elsewhere", ("dataset_uri",), "/tmp/elsewhere"),
    ],
)
def test_env_override_is_typed_like_the_default(variable, raw, path, expected):
    params = load_params(environ={variable: raw})
    value = params
    for key in path:
        value = value[key]
    assert value == expected
    assert type(value) is type(expected)


def test_float_env_override_accepts_exponent_notation():
    # 1e-4 is how people write a small tolerance; YAML 1.1 alone reads it as a string.
    params = load_params(environ={"GATE_MAX_PARITY_DIFF": "1e-4"})
    assert params["gate"]["max_parity_diff"] == pytest.approx(1e-4)
    assert isinstance(params["gate"]["max_parity_diff"], float)


@pytest.mark.parametrize(
    ("variable", "raw", "key", "type_name"),
    [
        ("DATA_IMAGE_SIZE", "big", "data.image_size", "int"),
        ("DATA_IMAGE_SIZE", "64.5", "data.image_size", "int"),
        ("DATA_IMAGE_SIZE", "true", "data.image_size", "int"),
        ("TRAIN_LEARNING_RATE", "fast", "train.learning_rate", "a number"),
        ("SMTP_STARTTLS", "2", "smtp.starttls", "true or false"),
        ("API_PORT", "80 80", "api.port", "int"),
    ],
)
def test_bad_env_type_fails_with_a_message_naming_the_variable_and_value(variable, raw, key, type_name):
    with pytest.raises(ConfigError) as caught:
        load_params(environ={variable: raw})
    message = str(caught.value)
    assert variable in message
    assert key in message
    assert repr(raw) in message
    assert type_name in message


def test_bad_cli_type_fails_with_a_message_naming_the_key():
    with pytest.raises(ConfigError, match=r"train\.epochs.*int"):
        load_params({"train.epochs": "many"}, environ={})


@pytest.mark.parametrize("key", ["train.epoch", "train", "nosuch", "data.split.holdout"])
def test_unknown_cli_key_is_refused(key):
    with pytest.raises(ConfigError, match="unknown configuration key") as caught:
        load_params({key: 3}, environ={})
    assert repr(key) in str(caught.value)


def test_cli_override_of_none_falls_through_to_env_and_file():
    params = load_params({"train.epochs": None, "data.image_size": None}, environ={"TRAIN_EPOCHS": "3"})
    assert params["train"]["epochs"] == 3
    assert params["data"]["image_size"] == yaml.safe_load(DEFAULT_PARAMS_FILE.read_text())["data"]["image_size"]


@pytest.mark.parametrize(
    "secret",
    ["*abc", "@x", "&anchor", "!tag", "%percent", "`tick", "{a: 1}", "[1, 2]", "a: b", "#hash", "yes",
     "null", "~", "123", "0x1F", "1e3", "'quoted'", "  padded  ", "p@ss:w0rd#!"],
)
def test_yaml_special_characters_in_a_string_value_are_kept_verbatim(secret):
    params = load_params(environ={"SMTP_PASSWORD": secret})
    assert params["smtp"]["password"] == secret
    params = load_params({"notify.to": secret}, environ={})
    assert params["notify"]["to"] == secret


def test_cli_beats_env_beats_file(tmp_path):
    params_file = write_params(tmp_path / "params.yaml", train={"epochs": 5})
    assert load_params(environ={}, params_file=params_file)["train"]["epochs"] == 5
    env = {"TRAIN_EPOCHS": "7"}
    assert load_params(environ=env, params_file=params_file)["train"]["epochs"] == 7
    assert load_params({"train.epochs": 9}, environ=env, params_file=params_file)["train"]["epochs"] == 9


def test_params_file_variable_selects_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("PARAMS_FILE", write_params(tmp_path / "other.yaml", train={"epochs": 11}))
    assert load_params()["train"]["epochs"] == 11


def test_only_the_given_environment_is_read(monkeypatch):
    monkeypatch.setenv("TRAIN_EPOCHS", "1234")
    assert load_params(environ={})["train"]["epochs"] != 1234
    assert load_params()["train"]["epochs"] == 1234


def test_an_explicit_environment_also_decides_the_params_file(tmp_path, monkeypatch):
    monkeypatch.setenv("PARAMS_FILE", str(tmp_path / "absent.yaml"))
    default_epochs = yaml.safe_load(DEFAULT_PARAMS_FILE.read_text())["train"]["epochs"]
    assert load_params(environ={})["train"]["epochs"] == default_epochs
    other = write_params(tmp_path / "other.yaml", train={"epochs": 11})
    assert load_params(environ={"PARAMS_FILE": other})["train"]["epochs"] == 11


def test_missing_params_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_params(environ={}, params_file=tmp_path / "absent.yaml")


def test_masked_hides_the_smtp_password_without_changing_the_params():
    params = load_params(environ={"SMTP_PASSWORD": "hunter2", "SMTP_USER": "robot"})
    hidden = masked(params)
    assert hidden["smtp"]["password"] == "***"
    assert hidden["smtp"]["user"] == "robot"
    assert hidden["train"] == params["train"]
    assert params["smtp"]["password"] == "hunter2"


def test_masked_hides_values_of_any_key_named_like_a_secret():
    hidden = masked({"webhook": {"secret": "s3"}, "api_token": "t0k", "db": {"password": "pw"}, "user": "u"})
    assert hidden == {"webhook": {"secret": "***"}, "api_token": "***", "db": {"password": "***"}, "user": "u"}


def test_describe_logs_the_configuration_without_the_secret():
    params = load_params(environ={"SMTP_PASSWORD": "hunter2"})
    line = describe(params, "notify")
    assert line.startswith("[notify] configuration: ")
    assert "hunter2" not in line
    logged = json.loads(line.split(": ", 1)[1])
    assert logged["smtp"]["password"] == "***"
    assert "\n" not in line


@pytest.mark.parametrize(
    "environ",
    [
        {"DATA_SPLIT_TRAIN": "0.5"},
        {"DATA_SPLIT_TEST": "0.5"},
        {"DATA_SPLIT_TRAIN": "0.9", "DATA_SPLIT_VALIDATION": "-0.05"},
    ],
)
def test_data_split_must_sum_to_one(environ):
    with pytest.raises(ConfigError, match="data.split"):
        load_params(environ=environ)


def test_data_split_that_sums_to_one_is_accepted():
    params = load_params({"data.split.train": 0.8, "data.split.validation": 0.1, "data.split.test": 0.1},
                         environ={})
    assert params["data"]["split"] == {"train": 0.8, "validation": 0.1, "test": 0.1}


def test_classes_must_be_distinct():
    with pytest.raises(ConfigError, match="classes"):
        load_params(environ={"CLASSES": "COVID,COVID"})
