"""docs/configuration.md is generated from the settings models and must match them."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings

from herald_common.settings import CommonSettings
from scripts import config_docs


def test_committed_page_is_current() -> None:
    committed = config_docs.OUTPUT.read_text(encoding="utf-8")
    assert committed == config_docs.render(), "docs/configuration.md is stale: run `make docs`"


@pytest.mark.parametrize("model", config_docs.MODELS, ids=lambda m: m.__name__)
def test_every_setting_is_described(model: type) -> None:
    undescribed = [
        name for name, field in config_docs.own_fields(model).items() if not field.description
    ]
    assert not undescribed, f"{model.__name__} fields without a description: {undescribed}"


def test_every_field_appears_once() -> None:
    text = config_docs.render()
    for model in config_docs.MODELS:
        for name in model.model_fields:
            row = f"| `{config_docs.env_name(model, name)}` |"
            assert text.count(row) == 1, row


def test_check_mode_reports_a_stale_file(tmp_path: Path) -> None:
    page = tmp_path / "configuration.md"
    assert config_docs.main(["--output", str(page), "--check"]) == 1
    assert config_docs.main(["--output", str(page)]) == 0
    assert config_docs.main(["--output", str(page), "--check"]) == 0
    page.write_text(page.read_text(encoding="utf-8") + "edited\n", encoding="utf-8")
    assert config_docs.main(["--output", str(page), "--check"]) == 1


def test_defaults_never_show_a_password() -> None:
    field = CommonSettings.model_fields["amqp_url"]
    shown = config_docs.describe_default("amqp_url", field)
    assert shown == "`amqp://guest:***@127.0.0.1:5672/`"
    assert "guest:guest" not in config_docs.render()
    assert config_docs._without_password("postgresql://u:s3cret@db:5432/x") == (
        "postgresql://u:***@db:5432/x"
    )

    class WithSecrets(BaseSettings):
        token: SecretStr = Field(default=SecretStr("s3cret"), description="A token.")
        smtp_password: str = Field(default="hunter2", description="A password.")

    for name, field in WithSecrets.model_fields.items():
        assert config_docs.describe_default(name, field) == "`***`"


def test_types_are_documented_for_operators() -> None:
    assert config_docs.describe_type(list[float]) == "comma-separated numbers"
    assert config_docs.describe_type(int | None) == "integer, optional"
    assert config_docs.describe_type(SecretStr) == "string, secret"
