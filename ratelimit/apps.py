import ipaddress
import re

from django.apps import AppConfig
from django.conf import settings
from django.core import checks


class RatelimitConfig(AppConfig):
    name = "ratelimit"
    verbose_name = "Abuse control"

    def ready(self) -> None:
        from core.checks import register_settings_check

        register_settings_check(self.label, settings_problems)
        checks.register(trusted_proxy_warnings)


def settings_problems() -> list[str]:
    problems = []
    if settings.CLIENT_IP_TRUSTED_PROXY_COUNT and settings.CLIENT_IP_TRUSTED_PROXIES:
        problems.append("Set CLIENT_IP_TRUSTED_PROXY_COUNT or CLIENT_IP_TRUSTED_PROXIES, not both")
    for cidr in settings.CLIENT_IP_TRUSTED_PROXIES:
        try:
            ipaddress.ip_network(cidr.strip(), strict=False)
        except ValueError:
            problems.append(f"CLIENT_IP_TRUSTED_PROXIES: {cidr!r} is not a CIDR")
    if not 1 <= settings.CLIENT_IP_IPV6_PREFIX <= 128 or settings.CLIENT_IP_TRUSTED_PROXY_COUNT < 0:
        problems.append("CLIENT_IP_IPV6_PREFIX must be 1-128, CLIENT_IP_TRUSTED_PROXY_COUNT >= 0")
    for name, top in (("ANON_AGGREGATE_PREFIXES_V6", 128), ("ANON_AGGREGATE_PREFIXES_V4", 32)):
        if any(not 1 <= prefix <= top for prefix in getattr(settings, name)):
            problems.append(f"{name} must list prefix lengths of 1-{top}")
    if settings.API_KEY_DEFAULT_WEIGHT <= 0:
        problems.append("API_KEY_DEFAULT_WEIGHT must be above 0")
    for name in ("SUBMIT_RATE", "STATUS_POLL_RATE", "API_KEY_DEFAULT_SUBMIT_RATE"):
        if not re.fullmatch(r"[1-9][0-9]*/[0-9]*[smhd]", getattr(settings, name)):
            problems.append(f"{name} must look like 8/m or 100/10s, not {getattr(settings, name)!r}")
    return problems


def trusted_proxy_warnings(**kwargs: object) -> list[checks.CheckMessage]:
    """Trust that lets a client choose its own address: by hop count, anyone who reaches web
    without the proxy writes X-Forwarded-For; a public range trusts machines not ours."""
    warnings: list[checks.CheckMessage] = []
    if settings.CLIENT_IP_TRUSTED_PROXY_COUNT:
        warnings.append(
            checks.Warning(
                "CLIENT_IP_TRUSTED_PROXY_COUNT trusts X-Forwarded-For from any peer",
                hint="Trust the proxy by its address instead: CLIENT_IP_TRUSTED_PROXIES (docs/operations.md).",
                id="ratelimit.W001",
            )
        )
    for cidr in settings.CLIENT_IP_TRUSTED_PROXIES:
        try:
            network = ipaddress.ip_network(cidr.strip(), strict=False)
        except ValueError:
            continue  # the settings check reports it
        if not network.is_private:
            warnings.append(
                checks.Warning(
                    f"CLIENT_IP_TRUSTED_PROXIES: {cidr!r} holds public addresses",
                    hint="Trust only the private address of the proxy in front of web; a load "
                    "balancer's public ranges belong in that proxy (docs/operations.md).",
                    id="ratelimit.W002",
                )
            )
    return warnings
