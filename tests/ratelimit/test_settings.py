"""Abuse-control settings: production defaults, and bad values fail loudly at start."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

PRINT_SETTINGS = (
    "import json, django; django.setup(); from django.conf import settings as s; "
    "print(json.dumps([s.SUBMIT_RATE, s.SUBMIT_MAX_ACTIVE_JOBS, s.CLIENT_IP_TRUSTED_PROXY_COUNT, "
    "s.CLIENT_IP_TRUSTED_PROXIES, s.CLIENT_IP_IPV6_PREFIX]))"
)


def load_settings(**overrides: str) -> subprocess.CompletedProcess[str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("SUBMIT_", "STATUS_POLL_", "CLIENT_IP_"))
    }
    return subprocess.run(
        [sys.executable, "-c", PRINT_SETTINGS],
        env={**env, "DJANGO_SETTINGS_MODULE": "config.settings", **overrides},
        capture_output=True,
        text=True,
    )


def test_defaults_are_eight_per_minute_one_active_job_and_no_trusted_proxy() -> None:
    loaded = load_settings()

    assert loaded.returncode == 0, loaded.stderr
    assert json.loads(loaded.stdout) == ["8/m", 1, 0, [], 64]


@pytest.mark.parametrize(
    "overrides",
    [
        {"CLIENT_IP_TRUSTED_PROXIES": "not-a-cidr"},
        {"CLIENT_IP_TRUSTED_PROXIES": "10.0.0.0/8", "CLIENT_IP_TRUSTED_PROXY_COUNT": "1"},
        {"CLIENT_IP_IPV6_PREFIX": "129"},
        {"SUBMIT_RATE": "eight per minute"},
        {"API_KEY_DEFAULT_SUBMIT_RATE": "lots"},
        {"API_KEY_DEFAULT_WEIGHT": "0"},
        {"ANON_AGGREGATE_PREFIXES_V6": "56,0"},
        {"ANON_AGGREGATE_PREFIXES_V4": "33"},
    ],
)
def test_bad_abuse_settings_stop_the_process(overrides: dict[str, str]) -> None:
    loaded = load_settings(**overrides)

    assert loaded.returncode != 0
    assert "ImproperlyConfigured" in loaded.stderr
