from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
import torch

from generator import GenerationParameters
from generator.engine import Engine, GeneratorOutOfMemory
from generator.models import FAMILIES


def png_bytes(image: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def request(**overrides: Any) -> GenerationParameters:
    fields = {
        "prompt": "a red fox in the snow",
        "width": 64,
        "height": 64,
        "steps": 3,
        "guidance_scale": 7.5,
        "seed": 7,
        "model": "tiny-sd",
    }
    return GenerationParameters(**{**fields, **overrides})


def test_output_size_equals_the_requested_size(engine: Engine) -> None:
    [result] = engine.generate([request(width=96, height=64)])

    assert [image.size for image in result.images] == [(96, 64)]


def test_same_seed_gives_identical_png_bytes(engine: Engine) -> None:
    first = engine.generate([request(seed=42)])[0].images[0]
    second = engine.generate([request(seed=42)])[0].images[0]

    assert png_bytes(first) == png_bytes(second)


def test_different_seed_gives_a_different_image(engine: Engine) -> None:
    first = engine.generate([request(seed=1)])[0].images[0]
    second = engine.generate([request(seed=2)])[0].images[0]

    assert np.abs(np.asarray(first, dtype=int) - np.asarray(second, dtype=int)).max() > 0


def test_negative_prompt_changes_the_image(engine: Engine) -> None:
    plain = engine.generate([request()])[0].images[0]
    negated = engine.generate([request(negative_prompt="blurry, grey")])[0].images[0]

    assert png_bytes(plain) != png_bytes(negated)


def test_several_images_per_request_use_consecutive_seeds(engine: Engine) -> None:
    [pair] = engine.generate([request(seed=10, num_images=2)])
    [alone] = engine.generate([request(seed=11)])

    assert len(pair.images) == 2
    assert png_bytes(pair.images[1]) == png_bytes(alone.images[0])


def test_batched_requests_match_their_single_runs(engine: Engine) -> None:
    requests = [request(prompt="a red fox", seed=3), request(prompt="a grey owl", seed=4, num_images=2)]

    batched = engine.generate(requests)
    single = [engine.generate([one])[0] for one in requests]

    for batch_result, single_result in zip(batched, single, strict=True):
        for in_batch, alone in zip(batch_result.images, single_result.images, strict=True):
            difference = np.abs(np.asarray(in_batch, dtype=int) - np.asarray(alone, dtype=int)).max()
            assert difference <= 1  # documented tolerance: one 8-bit level


def test_incompatible_requests_are_refused_as_one_batch(engine: Engine) -> None:
    with pytest.raises(ValueError, match="share size"):
        engine.generate([request(width=64), request(width=96)])


def test_step_callback_counts_up_to_the_pipeline_total(engine: Engine) -> None:
    seen: list[tuple[int, int]] = []

    engine.generate([request(steps=4)], on_step=lambda step, total: seen.append((step, total)))

    steps = [step for step, _ in seen]
    assert steps == sorted(steps) and steps[0] == 1
    assert {total for _, total in seen} == {steps[-1]}
    assert steps[-1] >= 4


def test_raising_from_the_step_callback_stops_the_run(engine: Engine) -> None:
    seen: list[int] = []

    class Stop(Exception):
        pass

    def stop_at_two(step: int, total: int) -> None:
        seen.append(step)
        if step == 2:
            raise Stop

    with pytest.raises(Stop):
        engine.generate([request(steps=10)], on_step=stop_at_two)
    assert seen == [1, 2]


@pytest.mark.parametrize("scheduler", FAMILIES["sd15"].schedulers)
def test_every_allowed_scheduler_generates(engine: Engine, scheduler: str) -> None:
    [result] = engine.generate([request(scheduler=scheduler)])

    assert result.images[0].size == (64, 64)


def test_prompt_beyond_the_token_window_is_reported_truncated(engine: Engine) -> None:
    [short, long] = engine.generate([request(prompt="a fox"), request(prompt="fox " * 40)])

    assert not short.prompt_truncated
    assert long.prompt_truncated


def test_out_of_memory_at_the_pipeline_boundary_is_named(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    def exhausted(*args: Any, **kwargs: Any) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(type(engine.pipeline), "__call__", exhausted)

    with pytest.raises(GeneratorOutOfMemory):
        engine.generate([request()])
