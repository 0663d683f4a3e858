"""Small PNG thumbnails of result images for the operators' console, made on first request."""

from __future__ import annotations

import io

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from PIL import Image

from jobs.models import JobImage

# Fits a list row; the job page shows the full images.
THUMBNAIL_PIXELS = 96


def thumbnail_name(image: JobImage) -> str:
    return f"thumbnails/{image.file.name}"


def image_thumbnail(*, image: JobImage) -> bytes:
    """The image scaled to fit ``THUMBNAIL_PIXELS`` square, stored beside the results the first
    time, so a list page reads one small file per row and never a full image."""
    name = thumbnail_name(image)
    if default_storage.exists(name):
        with default_storage.open(name, "rb") as stored:
            return bytes(stored.read())
    with image.file.open("rb") as original, Image.open(original) as picture:
        picture.thumbnail((THUMBNAIL_PIXELS, THUMBNAIL_PIXELS))
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG", optimize=True)
    default_storage.save(name, ContentFile(buffer.getvalue()))
    return buffer.getvalue()
