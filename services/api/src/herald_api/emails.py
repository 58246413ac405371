"""Email addresses are checked by email-validator (through pydantic's ``EmailStr``); this module
makes that check cheaper for the domains a service sees again and again.

Most of email-validator's time goes on the part after the ``@`` (IDNA and Unicode checks), and a
campaign of 100,000 recipients has a few hundred distinct domains. ``remember_domains`` puts a
bounded LRU cache in front of email-validator's domain check: the result for a domain is what
email-validator computes for it, computed once. What is cached is a pure function of its
arguments (the domain and two flags, no DNS: deliverability is not checked), so an address is
accepted, normalised and refused exactly as before; refusals are not cached (the check raises),
and a client sending many distinct domains only turns the cache over.
"""

from __future__ import annotations

import functools
import importlib
from typing import Any

DOMAINS_REMEMBERED = 4096


def remember_domains(size: int = DOMAINS_REMEMBERED) -> None:
    """Cache email-validator's domain check in this process (once; later calls do nothing)."""
    # ``email_validator.validate_email`` is the function; the module of that name calls the
    # domain check by the name it imported, which is what is replaced.
    module: Any = importlib.import_module("email_validator.validate_email")
    check = module.validate_email_domain_name
    if not hasattr(check, "cache_info"):
        module.validate_email_domain_name = functools.lru_cache(maxsize=size)(check)


def domain_cache_info() -> Any:
    """The cache's statistics (``functools`` ``CacheInfo``), or None before ``remember_domains``."""
    module: Any = importlib.import_module("email_validator.validate_email")
    info = getattr(module.validate_email_domain_name, "cache_info", None)
    return None if info is None else info()
