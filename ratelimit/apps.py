import ipaddress
import re

from django.conf import settings

from core.checks import SettingsCheckedAppConfig


class RatelimitConfig(SettingsCheckedAppConfig):
    name = "ratelimit"
    verbose_name = "Abuse control"

    def settings_problems(self) -> list[str]:
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
