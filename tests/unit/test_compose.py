"""docker-compose.yml stays in step with the CLI and the declared settings."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer.main
import yaml

from healthflow.cli.main import app
from healthflow.settings import ENV_PREFIX, Settings

COMPOSE_FILE = Path(__file__).parents[2] / "docker-compose.yml"


def load_services() -> dict[str, dict]:
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))["services"]


def is_group(command: object) -> bool:
    # typer may build on its own copy of click, so test for the group's interface, not its class.
    return isinstance(getattr(command, "commands", None), dict)


def resolve(command: object, words: list[str]) -> object:
    """Follow sub-command names through command groups; options end the walk."""
    for word in words:
        if word.startswith("-") or not is_group(command):
            break
        found = command.commands.get(word)
        assert found is not None, f"`healthflow {' '.join(words)}`: no command named {word!r}"
        command = found
    return command


def healthflow_services() -> list[tuple[str, dict]]:
    services = load_services()
    return [(name, spec) for name, spec in services.items() if spec.get("image") == "healthflow:latest"]


def test_compose_has_the_production_services() -> None:
    names = set(load_services())
    assert {
        "postgres",
        "kafka",
        "mlflow",
        "ingest-http",
        "deid-worker",
        "featurizer",
        "scoring",
        "monitor",
        "dashboard",
    } <= names


def test_postgres_is_version_16() -> None:
    assert load_services()["postgres"]["image"] == "postgres:16"


@pytest.mark.parametrize("name,spec", healthflow_services(), ids=[name for name, _ in healthflow_services()])
def test_service_command_exists_in_cli(name: str, spec: dict) -> None:
    root = typer.main.get_command(app)
    command = resolve(root, spec["command"])
    assert not is_group(command), f"service {name}: `{' '.join(spec['command'])}` names a group, not a command"
    options = {option for parameter in command.params for option in getattr(parameter, "opts", [])}
    for word in spec["command"]:
        if word.startswith("--"):
            assert word in options, (
                f"service {name}: option {word} not accepted by `healthflow {' '.join(spec['command'])}`"
            )


@pytest.mark.parametrize("name,spec", healthflow_services(), ids=[name for name, _ in healthflow_services()])
def test_service_variables_are_declared_settings(name: str, spec: dict) -> None:
    declared = {ENV_PREFIX + field.upper() for field in Settings.model_fields}
    variables = [key for key in spec.get("environment", {}) if key.startswith(ENV_PREFIX)]
    assert variables, f"service {name} sets no HEALTHFLOW_* variable"
    undeclared = sorted(set(variables) - declared)
    assert not undeclared, f"service {name} sets undeclared settings {undeclared}"


def test_env_example_variables_are_declared() -> None:
    declared = {ENV_PREFIX + field.upper() for field in Settings.model_fields}
    lines = (COMPOSE_FILE.parent / ".env.example").read_text(encoding="utf-8").splitlines()
    names = [line.split("=", 1)[0] for line in lines if line and not line.startswith("#")]
    assert names
    assert set(names) <= declared


def test_env_file_is_not_committed() -> None:
    ignored = (COMPOSE_FILE.parent / ".gitignore").read_text(encoding="utf-8").splitlines()
    assert ".env" in ignored
