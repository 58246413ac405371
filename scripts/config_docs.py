"""Generate ``docs/configuration.md`` from Herald's pydantic-settings models.

    uv run python -m scripts.config_docs           # rewrite docs/configuration.md
    uv run python -m scripts.config_docs --check   # exit 1 when the file is out of date

Every setting is a field of a settings model; this turns each model into a table of environment
variables (name, type, default, description), so operators read settings in one place and the
page cannot drift from the code (``tests/test_config_docs.py`` fails when it does).
"""

from __future__ import annotations

import argparse
import enum
import inspect
import re
import sys
import types
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin
from urllib.parse import urlsplit, urlunsplit

import annotated_types
from pydantic import SecretStr
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

from herald_api.settings import ApiSettings
from herald_channel_email.settings import EmailSettings
from herald_channel_push.settings import PushSettings
from herald_channel_sms.settings import SmsSettings
from herald_common.settings import CommonSettings, WorkerSettings
from herald_dispatcher.settings import DispatcherSettings

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "docs" / "configuration.md"


@dataclass(frozen=True)
class Section:
    """One table of the page: the settings a model adds to the documented model it extends."""

    title: str
    model: type[BaseSettings]
    read_by: str

    @property
    def anchor(self) -> str:
        return re.sub(r"[^a-z0-9 -]", "", self.title.lower()).replace(" ", "-")


SECTIONS: tuple[Section, ...] = (
    Section(
        "Every service",
        CommonSettings,
        "`herald-api`, `herald-dispatcher`, `herald-channel-email`, `herald-channel-push`, "
        "`herald-channel-sms` and `herald-migrate`",
    ),
    Section(
        "Every channel service",
        WorkerSettings,
        "`herald-channel-email`, `herald-channel-push` and `herald-channel-sms`",
    ),
    Section("API", ApiSettings, "`herald-api`"),
    Section("Dispatcher", DispatcherSettings, "`herald-dispatcher`"),
    Section("Email channel", EmailSettings, "`herald-channel-email`"),
    Section("Push channel", PushSettings, "`herald-channel-push`"),
    Section("SMS channel", SmsSettings, "`herald-channel-sms`"),
)
"""The documented models, each after the models it extends."""

MODELS: tuple[type[BaseSettings], ...] = tuple(section.model for section in SECTIONS)

_SECRET_NAME = re.compile(r"password|secret|token|api_key", re.IGNORECASE)
_CHOICES_PATTERN = re.compile(r"^\^\(([A-Za-z0-9_|-]+)\)\$$")
_SIMPLE_TYPES: dict[Any, str] = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    SecretStr: "string, secret",
    Path: "path",
}
_PLURALS: dict[Any, str] = {str: "strings", int: "integers", float: "numbers"}


def env_name(model: type[BaseSettings], name: str) -> str:
    """The environment variable that sets field ``name`` of ``model``."""
    field = model.model_fields[name]
    if isinstance(field.validation_alias, str):
        return field.validation_alias.upper()
    if field.alias:
        return field.alias.upper()
    prefix = str(model.model_config.get("env_prefix", ""))
    return f"{prefix}{name}".upper()


def own_fields(model: type[BaseSettings]) -> dict[str, FieldInfo]:
    """Fields of ``model`` that the nearest documented model it extends does not have."""
    base = next((c for c in model.__mro__[1:] if c in MODELS), None)
    inherited: set[str] = set()
    if base is not None and issubclass(base, BaseSettings):
        inherited = set(base.model_fields)
    return {n: f for n, f in model.model_fields.items() if n not in inherited}


def describe_type(annotation: Any, metadata: Sequence[Any] = ()) -> str:
    """A reader's name for a field's type, with its constraints."""
    text = _type_name(annotation)
    constraints = _constraints(metadata)
    return f"{text}, {constraints}" if constraints else text


def _type_name(annotation: Any) -> str:
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin is Union or origin is types.UnionType:
        present = [a for a in args if a is not type(None)]
        text = " or ".join(_type_name(a) for a in present)
        return f"{text}, optional" if len(present) < len(args) else text
    if origin in (list, tuple, set, frozenset):
        item = args[0] if args else str
        return f"comma-separated {_PLURALS.get(item, _type_name(item))}"
    if origin is Literal:
        return "one of " + ", ".join(f"`{a}`" for a in args)
    if inspect.isclass(annotation) and issubclass(annotation, enum.Enum):
        return "one of " + ", ".join(f"`{m.value}`" for m in annotation)
    if annotation in _SIMPLE_TYPES:
        return _SIMPLE_TYPES[annotation]
    return str(getattr(annotation, "__name__", annotation))


def _constraints(metadata: Sequence[Any]) -> str:
    lower: str | None = None
    upper: str | None = None
    parts: list[str] = []
    for item in metadata:
        if isinstance(item, annotated_types.Ge):
            lower = f"≥ {item.ge}"
        elif isinstance(item, annotated_types.Gt):
            lower = f"> {item.gt}"
        elif isinstance(item, annotated_types.Le):
            upper = f"≤ {item.le}"
        elif isinstance(item, annotated_types.Lt):
            upper = f"< {item.lt}"
        elif isinstance(item, annotated_types.MinLen):
            parts.append(f"at least {item.min_length} long")
        elif isinstance(item, annotated_types.MaxLen):
            parts.append(f"at most {item.max_length} long")
        elif isinstance(getattr(item, "pattern", None), str):
            pattern: str = item.pattern
            choices = _CHOICES_PATTERN.match(pattern)
            if choices:
                parts.append("one of " + ", ".join(f"`{c}`" for c in choices[1].split("|")))
            else:
                parts.append(f"matching `{pattern}`")
    if lower and upper and lower.startswith("≥") and upper.startswith("≤"):
        parts.insert(0, f"{lower[2:]} to {upper[2:]}")
    else:
        parts[:0] = [bound for bound in (lower, upper) if bound]
    return ", ".join(parts)


def describe_default(name: str, field: FieldInfo) -> str:
    """The default as it would be written in the environment; passwords never appear."""
    if field.is_required():
        return "*required*"
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "*unset*"
    secret = isinstance(value, SecretStr) or _SECRET_NAME.search(name) is not None
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if isinstance(value, str):
        if value and "://" in value:
            return f"`{_without_password(value)}`"
        if secret and value:
            return "`***`"
        return f"`{value}`" if value else '`""` (empty)'
    if isinstance(value, list | tuple | set | frozenset):
        return "`" + ",".join(_scalar(v) for v in value) + "`"
    return f"`{_scalar(value)}`"


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, enum.Enum):
        return str(value.value)
    return str(value)


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def render_section(section: Section) -> str:
    model = section.model
    lines = [
        f"## {section.title}",
        "",
        f"`{model.__module__}.{model.__qualname__}`, read by {section.read_by}.",
    ]
    if model.__doc__:
        lines += ["", " ".join(inspect.cleandoc(model.__doc__).split())]
    lines += ["", "| Variable | Type | Default | Description |", "|---|---|---|---|"]
    for name, field in own_fields(model).items():
        cells = (
            f"`{env_name(model, name)}`",
            describe_type(field.annotation, field.metadata),
            describe_default(name, field),
            field.description or "",
        )
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def render() -> str:
    """The whole of ``docs/configuration.md``."""
    contents = "\n".join(f"- [{s.title}](#{s.anchor})" for s in SECTIONS)
    head = f"""# Configuration

<!-- Generated from the settings models by `make docs` (python -m scripts.config_docs).
     Do not edit by hand: tests/test_config_docs.py fails when this page and the models differ. -->

Herald's services read every setting from an environment variable: `HERALD_` followed by the
setting's name in upper case (names are not case-sensitive). Nothing else configures them.

- Lists are comma-separated, not JSON: `HERALD_RETRY_DELAYS=1,5,30,120,600`.
- Booleans are `true` or `false` (`1`/`0`, `yes`/`no`, `on`/`off` work too).
- Durations are seconds and may have a fraction (`0.5`).
- Connection URLs and passwords are secrets: services never log them, and passwords in the
  defaults below are shown as `***`.
- *unset* means the setting is off, or falls back to another one as its description says.

A service reads the settings of every section that names it.

{contents}
"""
    return head + "".join("\n" + render_section(s) for s in SECTIONS)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate docs/configuration.md.")
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is out of date")
    parser.add_argument("--output", type=Path, default=OUTPUT, help="default: %(default)s")
    args = parser.parse_args(argv)
    output: Path = args.output
    text = render()
    if args.check:
        current = output.read_text(encoding="utf-8") if output.exists() else ""
        if current != text:
            print(f"{output} is out of date: run `make docs`", file=sys.stderr)
            return 1
        print(f"{output} is up to date")
        return 0
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
