"""Small preview pictures of a generation in progress, from its latents: a linear latent-to-RGB
projection by default (nearly free), or TAESD (``AutoencoderTiny``) when a folder holds one."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image

PREVIEW_MAX_SIDE = 256
PREVIEW_CONTENT_TYPES = {"webp": "image/webp", "jpeg": "image/jpeg"}

# Stable Diffusion 1.x's 4 latent channels to RGB, as fitted by the community (ComfyUI's
# latent_formats.SD15); SDXL's latents are close enough for a preview.
SD_LATENT_RGB_FACTORS = torch.tensor(
    [
        [0.3512, 0.2297, 0.3227],
        [0.3250, 0.4974, 0.2350],
        [-0.2829, 0.1762, 0.2721],
        [-0.2120, -0.2616, -0.7177],
    ]
)


def preview_size(width: int, height: int) -> tuple[int, int]:
    """The image's aspect ratio within ``PREVIEW_MAX_SIDE``, never larger than the image."""
    scale = min(1.0, PREVIEW_MAX_SIDE / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def project_latents(latents: torch.Tensor) -> torch.Tensor:
    """(N, C, h, w) latents to (N, h, w, 3) RGB in [0, 1]. Four channels use the SD factors; any
    other count (SD3, FLUX: 16) shows its first three channels, each image normalised alone."""
    latents = latents.detach().float().cpu()
    if latents.shape[1] == 4:
        rgb = torch.einsum("nchw,cr->nhwr", latents, SD_LATENT_RGB_FACTORS)
        return ((rgb + 1) / 2).clamp(0, 1)
    rgb = latents[:, :3].permute(0, 2, 3, 1)
    low = rgb.amin(dim=(1, 2, 3), keepdim=True)
    high = rgb.amax(dim=(1, 2, 3), keepdim=True)
    return (rgb - low) / (high - low).clamp(min=1e-6)


class PreviewRenderer:
    """Turns selected rows of a step's latents into encoded pictures of the image's aspect."""

    def __init__(self, *, image_format: str = "webp", taesd: Any = None) -> None:
        if image_format not in PREVIEW_CONTENT_TYPES:
            raise ValueError(
                f"preview format must be one of {sorted(PREVIEW_CONTENT_TYPES)}: {image_format!r}"
            )
        self.image_format = image_format
        self.content_type = PREVIEW_CONTENT_TYPES[image_format]
        self.taesd = taesd

    @classmethod
    def load(
        cls, *, image_format: str, taesd_folder: str, device: torch.device, dtype: torch.dtype
    ) -> PreviewRenderer:
        """With ``taesd_folder`` an ``AutoencoderTiny`` from it on the pipeline's device, else linear."""
        if not taesd_folder:
            return cls(image_format=image_format)
        from diffusers import AutoencoderTiny

        taesd = AutoencoderTiny.from_pretrained(taesd_folder, torch_dtype=dtype, local_files_only=True)
        return cls(image_format=image_format, taesd=taesd.to(device))

    def render(self, latents: torch.Tensor, rows: Sequence[int], *, width: int, height: int) -> list[bytes]:
        selected = latents[list(rows)]
        with torch.inference_mode():
            if self.taesd is not None:
                decoded = self.taesd.decode(selected / self.taesd.config.scaling_factor).sample
                rgb = ((decoded.float().cpu() + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1)
            else:
                rgb = project_latents(selected)
        pixels = (rgb * 255).round().to(torch.uint8).numpy()
        size = preview_size(width, height)
        return [
            self._encode(Image.fromarray(array).resize(size, Image.Resampling.BILINEAR)) for array in pixels
        ]

    def _encode(self, image: Image.Image) -> bytes:
        buffer = io.BytesIO()
        if self.image_format == "webp":
            # method 0: the fastest encoder setting; a preview is replaced within seconds.
            image.save(buffer, format="WEBP", quality=70, method=0)
        else:
            image.save(buffer, format="JPEG", quality=75)
        return buffer.getvalue()
