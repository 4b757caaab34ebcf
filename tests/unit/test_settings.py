from __future__ import annotations

import pytest

from healthflow.settings import DEV_SECRETS, SettingsError, check_environment, load_settings, settings_table


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.upper().startswith("HEALTHFLOW_"):
            monkeypatch.delenv(name)


def test_dev_profile_fills_development_secrets() -> None:
    settings = load_settings()
    assert settings.profile == "dev"
    assert settings.pseudonym_key is not None
    assert settings.pseudonym_key.get_secret_value() == DEV_SECRETS["pseudonym_key"]


@pytest.mark.parametrize("missing", ["PSEUDONYM_KEY", "PG_PASSWORD"])
def test_prod_without_secret_names_variable(monkeypatch: pytest.MonkeyPatch, missing: str) -> None:
    monkeypatch.setenv("HEALTHFLOW_PROFILE", "prod")
    for name in ("PSEUDONYM_KEY", "PG_PASSWORD", "JWT_SECRET"):
        if name != missing:
            monkeypatch.setenv(f"HEALTHFLOW_{name}", f"a-real-{name.lower()}-value")
    with pytest.raises(SettingsError) as raised:
        load_settings()
    assert f"HEALTHFLOW_{missing}" in str(raised.value)


def test_prod_rejects_public_development_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEALTHFLOW_PROFILE", "prod")
    monkeypatch.setenv("HEALTHFLOW_PSEUDONYM_KEY", DEV_SECRETS["pseudonym_key"])
    monkeypatch.setenv("HEALTHFLOW_PG_PASSWORD", "a-real-password")
    monkeypatch.setenv("HEALTHFLOW_JWT_SECRET", "a-real-jwt-secret")
    with pytest.raises(SettingsError, match="HEALTHFLOW_PSEUDONYM_KEY is the public development value"):
        load_settings()


def test_prod_with_all_secrets_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEALTHFLOW_PROFILE", "prod")
    monkeypatch.setenv("HEALTHFLOW_PSEUDONYM_KEY", "k" * 40)
    monkeypatch.setenv("HEALTHFLOW_PG_PASSWORD", "p" * 20)
    monkeypatch.setenv("HEALTHFLOW_JWT_SECRET", "j" * 40)
    settings = load_settings()
    assert settings.profile == "prod"


def test_secrets_never_appear_in_dump_or_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = {name: f"secret-{name}-7f3a9c" for name in ("PSEUDONYM_KEY", "PG_PASSWORD", "JWT_SECRET")}
    for name, value in secrets.items():
        monkeypatch.setenv(f"HEALTHFLOW_{name}", value)
    settings = load_settings()
    text = repr(settings) + str(settings.model_dump()) + settings.model_dump_json()
    for value in secrets.values():
        assert value not in text


def test_unknown_variable_is_rejected() -> None:
    with pytest.raises(SettingsError, match="HEALTHFLOW_PG_PROT"):
        check_environment({"HEALTHFLOW_PG_PROT": "5432"})


def test_invalid_value_names_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEALTHFLOW_PG_PORT", "not-a-port")
    with pytest.raises(SettingsError, match="HEALTHFLOW_PG_PORT"):
        load_settings()


def test_every_setting_has_a_description() -> None:
    rows = settings_table()
    assert rows
    for variable, _annotation, _default, meaning in rows:
        assert variable.startswith("HEALTHFLOW_")
        assert meaning, f"{variable} has no description"


def test_readme_lists_every_setting() -> None:
    from pathlib import Path

    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    missing = [variable for variable, *_ in settings_table() if variable not in readme]
    assert not missing, f"README.md does not list {missing}; regenerate the table with `make settings-doc`"
