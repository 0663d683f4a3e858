"""Result storage in S3 whose download links are signed for ``public_endpoint_url``, the address
browsers use: a presigned URL is valid only for the host it was signed for."""

from __future__ import annotations

import threading
from typing import Any

from storages.backends.s3 import S3Storage
from storages.utils import clean_name


class ResultStorage(S3Storage):
    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        self._signing = threading.local()

    def get_default_settings(self) -> dict[str, Any]:
        return {**super().get_default_settings(), "public_endpoint_url": None}

    def url(self, name: str, parameters: Any = None, expire: Any = None, http_method: Any = None) -> str:
        if not self.public_endpoint_url:
            return str(super().url(name, parameters, expire, http_method))
        client = getattr(self._signing, "client", None)
        if client is None:
            client = self._create_session().client(
                "s3",
                region_name=self.region_name,
                endpoint_url=self.public_endpoint_url,
                config=self.client_config,
            )
            self._signing.client = client
        return str(
            client.generate_presigned_url(
                "get_object",
                Params={
                    **(parameters or {}),
                    "Bucket": self.bucket_name,
                    "Key": self._normalize_name(clean_name(name)),
                },
                ExpiresIn=self.querystring_expire if expire is None else expire,
                HttpMethod=http_method,
            )
        )
