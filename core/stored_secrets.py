"""Secrets the database must give back (webhook signing secrets): how a new one is made, and
their encryption at rest, Fernet with ``SECRET_ENCRYPTION_KEYS`` (the first encrypts, every
one decrypts)."""

from __future__ import annotations

import base64
import secrets
from functools import cache

from cryptography.fernet import Fernet, MultiFernet
from django.conf import settings

# Standard Webhooks secrets: the prefix, then base64 of the HMAC key.
WEBHOOK_SECRET_PREFIX = "whsec_"
WEBHOOK_SECRET_BYTES = 32


def new_webhook_secret() -> str:
    return WEBHOOK_SECRET_PREFIX + base64.b64encode(secrets.token_bytes(WEBHOOK_SECRET_BYTES)).decode()


@cache
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(key) for key in keys])


def encrypt_secret(plain: str) -> str:
    return _fernet(tuple(settings.SECRET_ENCRYPTION_KEYS)).encrypt(plain.encode()).decode()


def decrypt_secret(token: str) -> str:
    return _fernet(tuple(settings.SECRET_ENCRYPTION_KEYS)).decrypt(token.encode()).decode()


def encryption_key_problems(keys: list[str]) -> list[str]:
    if not keys:
        return ["SECRET_ENCRYPTION_KEYS must list at least one key"]
    try:
        _fernet(tuple(keys))
    except ValueError:
        return ["SECRET_ENCRYPTION_KEYS: each key must be 32 url-safe base64-encoded bytes"]
    return []
