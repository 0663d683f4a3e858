"""Previews from latents: the linear projection for any channel count, TAESD from a folder, the
picture's size and format, and the engine handing each step's latents over."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from generator.parameters import GenerationParameters
from generator.previews import PreviewRenderer, preview_size, project_latents
from generator.tiny_model import build_tiny_taesd


@pytest.mark.parametrize("channels", [4, 16])
def test_projection_gives_rgb_in_range_for_sd_and_other_latent_layouts(channels: int) -> None:
    rgb = project_latents(torch.randn(2, channels, 8, 12) * 3)

    assert rgb.shape == (2, 8, 12, 3)
    assert rgb.min() >= 0 and rgb.max() <= 1


def test_projection_of_four_channels_uses_the_sd_factors() -> None:
    latents = torch.zeros(1, 4, 1, 1)
    latents[0, 3] = 1.0  # SD 1.x's fourth channel is mostly negative blue

    red, green, blue = project_latents(latents)[0, 0, 0].tolist()

    assert blue < red and blue < green


@pytest.mark.parametrize(
    ("width", "height", "expected"),
    [(512, 512, (256, 256)), (96, 64, (96, 64)), (1024, 512, (256, 128)), (512, 768, (171, 256))],
)
def test_preview_keeps_the_aspect_within_256_pixels(
    width: int, height: int, expected: tuple[int, int]
) -> None:
    assert preview_size(width, height) == expected


@pytest.mark.parametrize(("image_format", "pil_format"), [("webp", "WEBP"), ("jpeg", "JPEG")])
def test_renderer_encodes_the_chosen_rows_in_the_chosen_format(image_format: str, pil_format: str) -> None:
    pictures = PreviewRenderer(image_format=image_format).render(
        torch.randn(3, 4, 32, 48), [0, 2], width=384, height=256
    )

    assert len(pictures) == 2
    for picture in pictures:
        with Image.open(io.BytesIO(picture)) as image:
            assert image.format == pil_format
            assert image.size == (256, 171)


def test_an_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="preview format"):
        PreviewRenderer(image_format="gif")


def test_taesd_from_a_folder_decodes_the_latents(tmp_path: Path) -> None:
    folder = build_tiny_taesd(tmp_path / "taesd")
    renderer = PreviewRenderer.load(
        image_format="webp", taesd_folder=str(folder), device=torch.device("cpu"), dtype=torch.float32
    )
    latents = torch.randn(1, 4, 16, 16)

    (picture,) = renderer.render(latents, [0], width=64, height=64)

    assert renderer.taesd is not None
    with Image.open(io.BytesIO(picture)) as image:
        assert image.size == (64, 64)
    assert picture != PreviewRenderer(image_format="webp").render(latents, [0], width=64, height=64)[0]


def test_engine_hands_each_steps_latents_to_the_latents_callback(engine: Any) -> None:
    seen: list[tuple[int, tuple[int, ...]]] = []
    request = GenerationParameters(
        prompt="a lighthouse",
        width=64,
        height=64,
        steps=3,
        guidance_scale=7.5,
        seed=1,
        num_images=2,
        model="tiny-sd",
    )

    engine.generate([request], on_latents=lambda step, latents: seen.append((step, tuple(latents.shape))))

    # Every step, in order (PNDM runs steps + 1 timesteps): one latent row per image.
    assert [step for step, _ in seen] == list(range(1, len(seen) + 1))
    assert len(seen) >= 3
    assert {shape[:2] for _, shape in seen} == {(2, 4)}
