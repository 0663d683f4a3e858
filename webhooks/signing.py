"""Standard Webhooks signatures by the standard's own library; several ``whsec_`` secrets give
several signatures, so receivers can move to a new secret without downtime."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from datetime import UTC, datetime

from standardwebhooks.webhooks import Webhook

from core.stored_secrets import WEBHOOK_SECRET_PREFIX


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_`` secret; ValueError for anything else."""
    if not secret.startswith(WEBHOOK_SECRET_PREFIX):
        raise ValueError(f"A webhook secret must start with {WEBHOOK_SECRET_PREFIX!r}.")
    try:
        key = base64.b64decode(secret.removeprefix(WEBHOOK_SECRET_PREFIX), validate=True)
    except binascii.Error:
        raise ValueError("A webhook secret must be base64 after its prefix.") from None
    if len(key) < 24:
        raise ValueError("A webhook secret must hold at least 24 random bytes.")
    return key


def signature_header(*, secrets: Sequence[str], webhook_id: str, timestamp: int, body: bytes) -> str:
    signed_at = datetime.fromtimestamp(timestamp, tz=UTC)
    return " ".join(
        Webhook(secret_key(secret)).sign(webhook_id, signed_at, body.decode()) for secret in secrets
    )
