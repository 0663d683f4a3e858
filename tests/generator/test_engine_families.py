"""Every family the engine runs (SD 1.5, SDXL, SD 3.5, FLUX.1), each a tiny model of the real
diffusers classes loaded from disk: seeded, batched, progress from the pipeline's own
timesteps, the token windows of every tokenizer the pipeline reads the prompt with."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.core.management import call_command
from transformers import T5Tokenizer

from generator import GenerationParameters
from generator.engine import FAMILY_TRAITS, Engine
from generator.tiny_model import FAMILIES, T5_TOKEN_WINDOW, build_t5_tokenizer

PIPELINE_OF_FAMILY = {
    "sd15": "StableDiffusionPipeline",
    "sdxl": "StableDiffusionXLPipeline",
    "sd3": "StableDiffusion3Pipeline",
    "flux": "FluxPipeline",
}


@pytest.fixture(scope="module")
def engines(tiny_family_dirs: dict[str, Path]) -> dict[str, Engine]:
    return {family: Engine.load(str(folder)) for family, folder in tiny_family_dirs.items()}


def request(family: str, **fields: Any) -> GenerationParameters:
    values: dict[str, Any] = {
        "prompt": "a lighthouse at dusk",
        "width": 64,
        "height": 64,
        "steps": 3,
        "guidance_scale": 3.5,
        "seed": 7,
        "model": f"tiny-{family}",
        **fields,
    }
    return GenerationParameters(**values)


def png_bytes(image: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_t5_tokenizer_built_in_code_round_trips_with_its_whole_vocabulary(tmp_path: Path) -> None:
    build_t5_tokenizer(tmp_path)
    tokenizer = T5Tokenizer.from_pretrained(str(tmp_path))

    # A tokenizer that lost its vocabulary would encode every prompt to <unk>.
    assert len(tokenizer) == 260
    assert tokenizer.model_max_length == T5_TOKEN_WINDOW
    fox, owl = tokenizer("a red fox").input_ids, tokenizer("a grey owl").input_ids
    assert fox != owl and tokenizer.unk_token_id not in fox
    assert fox[-1] == tokenizer.eos_token_id


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_loads_its_own_pipeline_class_from_disk(engines: dict[str, Engine], family: str) -> None:
    pipeline = engines[family].pipeline

    assert type(pipeline).__name__ == PIPELINE_OF_FAMILY[family]
    assert hasattr(pipeline, FAMILY_TRAITS[type(pipeline).__name__].denoiser)
    assert pipeline.vae_scale_factor == 8


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_generates_batched_seeded_images_with_the_pipelines_step_total(
    engines: dict[str, Engine], family: str
) -> None:
    engine = engines[family]
    steps_seen: list[tuple[int, int]] = []

    first, second = engine.generate(
        [request(family), request(family, prompt="a red fox", seed=8)],
        on_step=lambda step, total: steps_seen.append((step, total)),
    )
    alone = engine.generate([request(family)])[0]

    assert first.images[0].size == (64, 64)
    # A batch may differ from a run alone by one 8-bit level (documented tolerance), never more.
    assert np.abs(np.asarray(first.images[0], dtype=int) - np.asarray(alone.images[0], dtype=int)).max() <= 1
    assert png_bytes(first.images[0]) != png_bytes(second.images[0])
    total = int(engine.pipeline.num_timesteps)
    assert steps_seen[-1] == (total, total) and total >= 3


@pytest.mark.parametrize("family", FAMILIES)
def test_the_same_seed_gives_the_same_bytes_in_a_freshly_loaded_engine(
    engines: dict[str, Engine], tiny_family_dirs: dict[str, Path], family: str
) -> None:
    warm = engines[family].generate([request(family, seed=11)])[0]
    fresh = Engine.load(str(tiny_family_dirs[family])).generate([request(family, seed=11)])[0]

    assert png_bytes(warm.images[0]) == png_bytes(fresh.images[0])


@pytest.mark.parametrize(
    ("family", "words", "truncated"),
    [
        ("sd15", 100, True),
        ("sdxl", 100, True),
        # Past CLIP's 77 tokens T5 still reads the prompt, up to its own window.
        ("sd3", 100, False),
        ("flux", 100, False),
        ("sd3", 200, True),
        ("flux", 200, False),
        ("flux", 300, True),
        ("sd15", 20, False),
    ],
)
def test_prompt_is_reported_truncated_only_where_part_of_it_reaches_no_text_encoder(
    engines: dict[str, Engine], family: str, words: int, truncated: bool
) -> None:
    # CLIP reads "a" as one token, T5 as a word start and a letter: words + 2 and 2 * words + 1.
    prompt = " ".join(["a"] * words)

    assert engines[family].prompt_exceeds_window(prompt) is truncated


def test_flux_takes_no_negative_prompt_and_the_others_do(engines: dict[str, Engine]) -> None:
    assert {family: engine.traits.negative_prompt for family, engine in engines.items()} == {
        "sd15": True,
        "sdxl": True,
        "sd3": True,
        "flux": False,
    }


def test_sdxl_few_step_request_with_guidance_zero_generates(engines: dict[str, Engine]) -> None:
    (result,) = engines["sdxl"].generate([request("sdxl", steps=1, guidance_scale=0.0)])

    assert result.images[0].size == (64, 64)


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_flow_families_run_the_flow_match_euler_scheduler(engines: dict[str, Engine], family: str) -> None:
    (result,) = engines[family].generate([request(family, scheduler="flow_euler")])

    assert result.images[0].size == (64, 64)


@pytest.mark.parametrize("family", ["sdxl", "sd3", "flux"])
def test_build_tiny_model_command_writes_a_family_beside_the_default_model(
    tmp_path: Path, family: str
) -> None:
    call_command(
        "build_tiny_model", "--family", family, "--output", str(tmp_path / family), stdout=io.StringIO()
    )

    index = (tmp_path / family / "model_index.json").read_text()
    assert f'"{PIPELINE_OF_FAMILY[family]}"' in index


@pytest.mark.parametrize(("family", "channels"), [("sd15", 4), ("sdxl", 4), ("sd3", 16), ("flux", 16)])
def test_the_latents_hook_gets_every_family_as_images_by_channels_rows_and_columns(
    engines: dict[str, Engine], family: str, channels: int
) -> None:
    shapes: list[tuple[int, ...]] = []

    engines[family].generate(
        [request(family, width=128, height=64)],
        on_latents=lambda _step, latents: shapes.append(tuple(latents.shape)),
    )

    # FLUX's packed tokens come unpacked, so previews treat every family alike.
    assert set(shapes) == {(1, channels, 8, 16)}
