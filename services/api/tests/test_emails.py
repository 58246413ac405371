"""The domain cache in front of email-validator changes no address's outcome."""

from __future__ import annotations

import importlib
from typing import Any

import pytest
from pydantic import EmailStr, TypeAdapter, ValidationError

from herald_api.emails import domain_cache_info, remember_domains

ADDRESSES = [
    "ada@example.com",
    "Ada.Lovelace+tag@Example.COM",
    "ada@EXAMPLE.com",
    "Postmaster@example.com",
    "ada@bücher.de",
    "ada@xn--bcher-kva.de",
    "用户@例子.广告",
    "ada@localhost",
    "ada@example.invalid",
    "ada@b",
    "ada@-bad.com",
    "ada@exa_mple.com",
    "ada@example.com.",
    "a..b@example.com",
    "ada@" + "x" * 64 + ".com",
    "ada@" + ".".join(["abcdefghij"] * 30) + ".com",
    "ada@ex ample.com",
    "Ada <ada@example.com>",
    "ada@[127.0.0.1]",
    "ada@",
]
ADAPTER: TypeAdapter[str] = TypeAdapter(EmailStr)


def _outcomes() -> list[tuple[str, Any]]:
    found: list[tuple[str, Any]] = []
    for address in ADDRESSES:
        try:
            found.append(("accepted", ADAPTER.validate_python(address)))
        except ValidationError as exc:
            found.append(("refused", [(e["type"], e["msg"]) for e in exc.errors()]))
    return found


def test_remembered_domains_accept_normalise_and_refuse_as_before(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    module: Any = importlib.import_module("email_validator.validate_email")
    check = module.validate_email_domain_name
    monkeypatch.setattr(module, "validate_email_domain_name", getattr(check, "__wrapped__", check))
    assert domain_cache_info() is None
    before = _outcomes()
    assert ("accepted", "Ada.Lovelace+tag@example.com") in before  # the domain normalised
    assert sum(kind == "refused" for kind, _ in before) >= 10

    remember_domains()
    first = _outcomes()
    again = _outcomes()  # the domains now come from the cache
    assert first == before
    assert again == before
    info = domain_cache_info()
    assert info is not None
    assert info.hits >= 5


def test_remembering_twice_keeps_one_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    module: Any = importlib.import_module("email_validator.validate_email")
    check = module.validate_email_domain_name
    monkeypatch.setattr(module, "validate_email_domain_name", getattr(check, "__wrapped__", check))
    remember_domains()
    cached = module.validate_email_domain_name
    remember_domains()
    assert module.validate_email_domain_name is cached
    assert not hasattr(cached.__wrapped__, "cache_info")
