"""Loads a diffusers pipeline of any family the engine runs (SD 1.x, SDXL, SD 3.5, FLUX.1) once
and runs seeded, batched generations on it."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from diffusers import (
    DDIMScheduler,
    DiffusionPipeline,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    PNDMScheduler,
)
from diffusers.utils import logging as diffusers_logging
from PIL import Image

from core.logging import log_event
from generator.parameters import SCHEDULER_NAMES, GenerationParameters

logger = logging.getLogger(__name__)

_SCHEDULER_CLASSES: dict[str, Any] = {
    "pndm": PNDMScheduler,
    "euler": EulerDiscreteScheduler,
    "euler_a": EulerAncestralDiscreteScheduler,
    "dpmpp_2m": DPMSolverMultistepScheduler,
    "ddim": DDIMScheduler,
    "flow_euler": FlowMatchEulerDiscreteScheduler,
}
assert set(_SCHEDULER_CLASSES) | {"default"} == set(SCHEDULER_NAMES)

_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}

StepCallback = Callable[[int, int], None]
# Gets the step and the latents after it (one row per image), before ``on_step`` runs.
LatentsCallback = Callable[[int, torch.Tensor], None]


@dataclass(frozen=True)
class FamilyTraits:
    """How one pipeline class differs from the others, all the engine needs to tell them apart."""

    denoiser: str  # the attribute holding the UNet or transformer (what compile wraps)
    negative_prompt: bool  # FLUX.1 is guidance-distilled: no unconditional pass to steer away from
    # The T5 tokenizer's attribute and the tokens the pipeline reads with it; None: CLIP only.
    t5_tokenizer: str | None = None
    t5_window: int = 0
    # FLUX.1 packs 2x2 latent patches into tokens; the latents hook unpacks them to (N, C, h, w).
    packed_latents: bool = False


# By the pipeline class ``from_pretrained`` resolved from the model's own model_index.json.
FAMILY_TRAITS: dict[str, FamilyTraits] = {
    "StableDiffusionPipeline": FamilyTraits(denoiser="unet", negative_prompt=True),
    "StableDiffusionXLPipeline": FamilyTraits(denoiser="unet", negative_prompt=True),
    "StableDiffusion3Pipeline": FamilyTraits(
        denoiser="transformer", negative_prompt=True, t5_tokenizer="tokenizer_3", t5_window=256
    ),
    "FluxPipeline": FamilyTraits(
        denoiser="transformer",
        negative_prompt=False,
        t5_tokenizer="tokenizer_2",
        t5_window=512,
        packed_latents=True,
    ),
}
TOKENIZER_ATTRIBUTES = ("tokenizer", "tokenizer_2", "tokenizer_3")


class GeneratorOutOfMemory(Exception):
    """The accelerator ran out of memory; its cache was emptied and the engine is usable."""


@dataclass(frozen=True)
class GenerationResult:
    images: list[Image.Image]
    prompt_truncated: bool


def choose_device(preference: str = "auto") -> torch.device:
    if preference != "auto":
        return torch.device(preference)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def choose_dtype(device: torch.device, preference: str = "auto") -> torch.dtype:
    if preference != "auto":
        return _DTYPES[preference]
    # Half precision halves memory and doubles throughput on GPUs; CPUs have no fast fp16 path.
    return torch.float16 if device.type == "cuda" else torch.float32


class Engine:
    """One warm pipeline. Not thread-safe: a worker process owns it."""

    def __init__(self, pipeline: Any, *, device: torch.device) -> None:
        family = type(pipeline).__name__
        if family not in FAMILY_TRAITS:
            raise ValueError(f"{family} is not a pipeline the engine runs ({', '.join(FAMILY_TRAITS)})")
        self.pipeline = pipeline
        self.traits = FAMILY_TRAITS[family]
        self.device = device
        self._model_scheduler = pipeline.scheduler
        self._schedulers: dict[str, Any] = {"default": pipeline.scheduler}

    @classmethod
    def load(
        cls,
        model: str,
        *,
        allow_hub: bool = False,
        device: str = "auto",
        dtype: str = "auto",
        compile_denoiser: bool = False,
    ) -> Engine:
        """Loads ``model`` (a local folder, or a hub id when ``allow_hub``) with ``from_pretrained``."""
        diffusers_logging.disable_progress_bar()
        chosen_device = choose_device(device)
        chosen_dtype = choose_dtype(chosen_device, dtype)
        pipeline = DiffusionPipeline.from_pretrained(
            model, dtype=chosen_dtype, local_files_only=not allow_hub
        )
        pipeline.to(chosen_device)
        pipeline.set_progress_bar_config(disable=True)
        engine = cls(pipeline, device=chosen_device)
        if compile_denoiser:
            denoiser = engine.traits.denoiser
            setattr(
                pipeline,
                denoiser,
                torch.compile(getattr(pipeline, denoiser), mode="reduce-overhead", fullgraph=True),
            )
        log_event(
            logger.info,
            "pipeline_loaded",
            model=model,
            family=type(pipeline).__name__,
            device=chosen_device,
            dtype=chosen_dtype,
        )
        return engine

    def token_windows(self) -> list[tuple[Any, int]]:
        """Each tokenizer the pipeline reads the prompt with, and how many tokens it reads."""
        windows = []
        for attribute in TOKENIZER_ATTRIBUTES:
            tokenizer = getattr(self.pipeline, attribute, None)
            if tokenizer is None:
                continue
            is_t5 = attribute == self.traits.t5_tokenizer
            windows.append((tokenizer, self.traits.t5_window if is_t5 else tokenizer.model_max_length))
        return windows

    def prompt_exceeds_window(self, prompt: str) -> bool:
        """Whether part of the prompt reaches no text encoder: past CLIP's 77 tokens, SD 3.5's and
        FLUX.1's T5 still reads it, up to its own window."""
        return all(len(tokenizer(prompt).input_ids) > window for tokenizer, window in self.token_windows())

    def warm_up(self) -> None:
        """One tiny run so the first real job does not pay for lazy initialisation."""
        self.generate(
            [
                GenerationParameters(
                    prompt="warm up",
                    width=64,
                    height=64,
                    steps=1,
                    guidance_scale=7.5,
                    seed=0,
                    model="warm-up",
                )
            ]
        )

    def generate(
        self,
        requests: Sequence[GenerationParameters],
        *,
        on_step: StepCallback | None = None,
        on_latents: LatentsCallback | None = None,
    ) -> list[GenerationResult]:
        """Runs compatible requests as one pipeline call; results come back in request order.
        Each image has a CPU generator seeded ``seed + index``: the same noise whatever shares the
        batch, on any device. ``on_step(step, total)`` runs per step; raising from it stops the run."""
        if not requests:
            return []
        keys = {request.batch_key for request in requests}
        if len(keys) != 1:
            raise ValueError(f"requests in one batch must share size, steps, guidance and scheduler: {keys}")
        first = requests[0]
        per_image = [(request, seed) for request in requests for seed in request.image_seeds()]

        self.pipeline.scheduler = self._scheduler(first.scheduler)

        def step_end(
            pipeline: Any, step: int, timestep: Any, callback_kwargs: dict[str, Any]
        ) -> dict[str, Any]:
            if on_latents is not None:
                latents = callback_kwargs["latents"]
                if self.traits.packed_latents:
                    latents = type(pipeline)._unpack_latents(
                        latents, first.height, first.width, pipeline.vae_scale_factor
                    )
                on_latents(step + 1, latents)
            if on_step is not None:
                # PNDM runs steps + 1 timesteps: the pipeline's own count is the true total.
                on_step(step + 1, int(pipeline.num_timesteps))
            return callback_kwargs

        family_kwargs: dict[str, Any] = {}
        if self.traits.negative_prompt:
            family_kwargs["negative_prompt"] = [request.negative_prompt for request, _ in per_image]
        if self.traits.t5_tokenizer:
            family_kwargs["max_sequence_length"] = self.traits.t5_window
        try:
            with torch.inference_mode():
                output = self.pipeline(
                    prompt=[request.prompt for request, _ in per_image],
                    **family_kwargs,
                    width=first.width,
                    height=first.height,
                    num_inference_steps=first.steps,
                    guidance_scale=first.guidance_scale,
                    generator=[torch.Generator(device="cpu").manual_seed(seed) for _, seed in per_image],
                    callback_on_step_end=step_end,
                    callback_on_step_end_tensor_inputs=["latents"],
                    output_type="pil",
                )
        except torch.OutOfMemoryError as exc:
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            raise GeneratorOutOfMemory(str(exc)) from exc

        images = iter(output.images)
        return [
            GenerationResult(
                images=list(itertools.islice(images, request.num_images)),
                prompt_truncated=self.prompt_exceeds_window(request.prompt),
            )
            for request in requests
        ]

    def _scheduler(self, name: str) -> Any:
        if name not in self._schedulers:
            self._schedulers[name] = _SCHEDULER_CLASSES[name].from_config(self._model_scheduler.config)
        return self._schedulers[name]
