"""Settings every channel service has, named after its channel, made in one place.

``channel_settings_base("sms", http_port=8003, default_providers="sandbox",
providers=("twilio", "vonage", "sandbox"))`` makes a settings class with:

- ``HERALD_SMS_HTTP_HOST`` / ``HERALD_SMS_HTTP_PORT``: the service's ops HTTP server;
- ``HERALD_SMS_PROVIDERS``: the ordered provider list (comma-separated), tried in that order;
- ``HERALD_SMS_PREFETCH``: deliveries held at once (``HERALD_PREFETCH`` when unset);
- ``HERALD_SMS_RETRY_DELAYS`` / ``HERALD_SMS_RETRY_MAX_ATTEMPTS``: the channel's retry policy
  (``HERALD_RETRY_DELAYS`` / ``HERALD_RETRY_MAX_ATTEMPTS`` when unset);
- per provider, ``HERALD_SMS_<PROVIDER>_`` + ``TIMEOUT``, ``RATE_LIMIT``, ``RATE_BURST``,
  ``BREAKER_FAILURE_THRESHOLD``, ``BREAKER_WINDOW``, ``BREAKER_COOLDOWN``.

A channel's settings class derives from it and adds its providers' own fields (credentials, base
URLs). The classes are made with ``pydantic.create_model`` so that the names stay the operator's
contract in one place; type checkers see ``ChannelSettingsBase``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, ClassVar

from pydantic import Field, create_model, model_validator
from pydantic_settings import NoDecode

from .channel_service import ChannelOptions
from .providers import ProviderLimits
from .settings import RetryPolicy, WorkerSettings, check_delays

_LIST_SUFFIXES = ("_providers", "_retry_delays")


class ChannelSettingsBase(WorkerSettings):
    """What ``channel_settings_base`` adds, read by name (see the module docstring)."""

    CHANNEL: ClassVar[str] = ""
    PROVIDERS: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="before")
    @classmethod
    def _split_lists(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key, value in list(data.items()):
                if str(key).lower().endswith(_LIST_SUFFIXES) and isinstance(value, str):
                    data[key] = [part.strip() for part in value.split(",") if part.strip()]
        return data

    @model_validator(mode="after")
    def _check_channel(self) -> ChannelSettingsBase:
        names = self._get("providers")
        unknown = [n for n in names if n not in self.PROVIDERS]
        if not names or unknown:
            raise ValueError(
                f"{self.CHANNEL}_providers must name one or more of {', '.join(self.PROVIDERS)}"
                + (f"; unknown: {', '.join(unknown)}" if unknown else "")
            )
        check_delays(self._get("retry_delays"))
        return self

    def _get(self, suffix: str) -> Any:
        return getattr(self, f"{self.CHANNEL}_{suffix}")

    def retry_policy(self) -> RetryPolicy:
        base = super().retry_policy()
        delays = self._get("retry_delays")
        return RetryPolicy(
            delays=tuple(delays) if delays else base.delays,
            max_attempts=self._get("retry_max_attempts") or base.max_attempts,
            jitter=base.jitter,
        )

    def provider_limits(self, provider: str) -> ProviderLimits:
        def get(name: str) -> Any:
            return getattr(self, f"{self.CHANNEL}_{provider}_{name}")

        timeout = get("timeout")
        return ProviderLimits(
            timeout=self.provider_timeout if timeout is None else timeout,
            rate_limit=get("rate_limit"),
            rate_burst=get("rate_burst"),
            breaker_failure_threshold=get("breaker_failure_threshold"),
            breaker_window=get("breaker_window"),
            breaker_cooldown=get("breaker_cooldown"),
        )

    def channel_options(self) -> ChannelOptions:
        prefetch = self._get("prefetch")
        return ChannelOptions(
            channel=self.CHANNEL,
            http_host=self._get("http_host"),
            http_port=self._get("http_port"),
            providers=tuple(self._get("providers")),
            prefetch=self.prefetch if prefetch is None else prefetch,
            retry_policy=self.retry_policy(),
        )

    @property
    def lease_seconds(self) -> float:
        """A lease covers the longest provider timeout (a failover renews it per provider)."""
        timeouts = [self.provider_limits(p).timeout for p in self._get("providers")]
        return max([self.provider_timeout, *timeouts]) + self.lease_margin


def channel_settings_base(
    channel: str,
    *,
    http_port: int,
    default_providers: str,
    providers: Sequence[str],
) -> type[ChannelSettingsBase]:
    """The settings class of ``channel`` with the fields listed in the module docstring."""
    c = channel
    fields: dict[str, Any] = {
        f"{c}_http_host": (
            str,
            Field(default="127.0.0.1", description=f"Address of the {c} service's ops HTTP."),
        ),
        f"{c}_http_port": (
            int,
            Field(
                default=http_port,
                ge=0,
                le=65535,
                description=f"Port of the {c} service's /healthz, /readyz, /metrics.",
            ),
        ),
        f"{c}_providers": (
            Annotated[list[str], NoDecode],
            Field(
                default=[p.strip() for p in default_providers.split(",")],
                description=(
                    f"{c} providers in the order they are tried, comma-separated "
                    f"(of: {', '.join(providers)}); a transient failure or an open breaker "
                    "moves an attempt to the next."
                ),
            ),
        ),
        f"{c}_prefetch": (
            int | None,
            Field(
                default=None, ge=1, le=2000, description=f"{c} prefetch; HERALD_PREFETCH if unset."
            ),
        ),
        f"{c}_retry_delays": (
            Annotated[list[float] | None, NoDecode],
            Field(
                default=None,
                description=f"{c} retry tiers in seconds; HERALD_RETRY_DELAYS if unset.",
            ),
        ),
        f"{c}_retry_max_attempts": (
            int | None,
            Field(
                default=None,
                ge=1,
                description=f"{c} attempt budget; HERALD_RETRY_MAX_ATTEMPTS if unset.",
            ),
        ),
    }
    for p in providers:
        fields.update(
            {
                f"{c}_{p}_timeout": (
                    float | None,
                    Field(
                        default=None,
                        gt=0,
                        description=(
                            f"Seconds one {p} call may take; HERALD_PROVIDER_TIMEOUT if unset."
                        ),
                    ),
                ),
                f"{c}_{p}_rate_limit": (
                    float | None,
                    Field(
                        default=None,
                        gt=0,
                        description=(
                            f"{p} messages a second, for all {c} instances together (the "
                            "account's limit); unset: none."
                        ),
                    ),
                ),
                f"{c}_{p}_rate_burst": (
                    int,
                    Field(default=1, ge=1, description=f"{p} messages that may go at once."),
                ),
                f"{c}_{p}_breaker_failure_threshold": (
                    int,
                    Field(
                        default=5,
                        ge=1,
                        description=f"{p} failures (timeouts, 5xx, 429) within the window "
                        "that open its breaker.",
                    ),
                ),
                f"{c}_{p}_breaker_window": (
                    float,
                    Field(
                        default=30.0, gt=0, description=f"Seconds over which {p} failures count."
                    ),
                ),
                f"{c}_{p}_breaker_cooldown": (
                    float,
                    Field(
                        default=30.0,
                        gt=0,
                        description=f"Seconds an open {p} breaker waits before a trial call.",
                    ),
                ),
            }
        )
    model: type[ChannelSettingsBase] = create_model(
        f"{channel.title()}ChannelSettings", __base__=ChannelSettingsBase, **fields
    )
    model.CHANNEL = channel
    model.PROVIDERS = tuple(providers)
    return model
