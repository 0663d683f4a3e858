import ipaddress
import re

from django.apps import AppConfig
from django.conf import settings


class RatelimitConfig(AppConfig):
    name = "ratelimit"
    verbose_name = "Abuse control"

    def ready(self) -> None:
        from core.checks import register_settings_check

        register_settings_check(self.label, settings_problems)


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
    for name in ("SUBMIT_RATE", "STATUS_POLL_RATE"):
        if not re.fullmatch(r"[1-9][0-9]*/[0-9]*[smhd]", getattr(settings, name)):
            problems.append(f"{name} must look like 8/m or 100/10s, not {getattr(settings, name)!r}")
    return problems
