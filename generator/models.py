"""The model families the engine runs and the registry entry of one served model (no torch here):
what a request may ask of a model, beside the limits every model shares."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from generator.parameters import SCHEDULER_NAMES, GenerationParameters, ParameterLimits

# Denoising-diffusion schedulers (epsilon or v prediction) versus flow matching (SD 3.x, FLUX.1).
DIFFUSION_SCHEDULERS = tuple(name for name in SCHEDULER_NAMES if name != "flow_euler")
FLOW_SCHEDULERS = ("default", "flow_euler")


@dataclass(frozen=True)
class Family:
    """What a family's pipeline accepts, as its diffusers class defines it."""

    name: str
    pipeline_class: str
    negative_prompt: bool
    schedulers: tuple[str, ...]


FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (
        Family("sd15", "StableDiffusionPipeline", negative_prompt=True, schedulers=DIFFUSION_SCHEDULERS),
        Family("sdxl", "StableDiffusionXLPipeline", negative_prompt=True, schedulers=DIFFUSION_SCHEDULERS),
        Family("sd3", "StableDiffusion3Pipeline", negative_prompt=True, schedulers=FLOW_SCHEDULERS),
        # FLUX.1 is guidance-distilled: it has no unconditional pass, so nothing to steer away from.
        Family("flux", "FluxPipeline", negative_prompt=False, schedulers=FLOW_SCHEDULERS),
    )
}
# The defaults and limits a registry entry may set for itself.
DEFAULT_NAMES = ("width", "height", "steps", "guidance_scale", "scheduler")
LIMIT_NAMES = ("max_size", "max_steps")


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """One served model: where it loads from, its family, its defaults, limits and price."""

    name: str
    source: str  # a local folder, or a hub id where the hub is allowed
    family: Family
    defaults: Mapping[str, Any]
    limits: ParameterLimits
    cost_weight: float = 1.0  # its denoiser's work per step relative to Stable Diffusion 1.5's
    memory_gb: float = 0.0  # accelerator memory it needs loaded, for sizing workers

    @classmethod
    def from_config(
        cls,
        name: str,
        config: Mapping[str, Any],
        *,
        fallback_defaults: Mapping[str, Any],
        fallback_limits: ParameterLimits,
    ) -> ModelSpec:
        """An entry of the registry; defaults and limits it does not set are the deployment's.
        Raises ValueError naming what is wrong."""
        unknown = set(config) - {"source", "family", "defaults", "limits", "cost_weight", "memory_gb"}
        family = FAMILIES.get(config.get("family", ""))
        defaults = dict(config.get("defaults", {}))
        limits = dict(config.get("limits", {}))
        if unknown or not config.get("source") or family is None:
            raise ValueError(
                f"model {name!r} needs a source and a family ({', '.join(FAMILIES)}), "
                f"and nothing else than defaults, limits, cost_weight and memory_gb"
            )
        if set(defaults) - set(DEFAULT_NAMES) or set(limits) - set(LIMIT_NAMES):
            raise ValueError(
                f"model {name!r}: defaults may set {', '.join(DEFAULT_NAMES)}; limits {', '.join(LIMIT_NAMES)}"
            )
        return cls(
            name=name,
            source=str(config["source"]),
            family=family,
            defaults={"scheduler": "default", **fallback_defaults, **defaults},
            limits=replace(fallback_limits, **limits),
            cost_weight=float(config.get("cost_weight", 1.0)),
            memory_gb=float(config.get("memory_gb", 0.0)),
        )

    def default_request_violations(self) -> list[tuple[str, str, str]]:
        """The rules a request of only this model's defaults breaks: a configuration mistake."""
        return self.violations(
            GenerationParameters(prompt="a default request", model=self.name, **self.defaults)
        )

    def violations(self, params: GenerationParameters) -> list[tuple[str, str, str]]:
        """This model's limits and its family's rules, as (parameter, code, message)."""
        found = self.limits.violations(params)
        if params.negative_prompt and not self.family.negative_prompt:
            found.append(
                (
                    "negative_prompt",
                    "negative_prompt_unsupported",
                    f"Model {self.name} takes no negative prompt.",
                )
            )
        if params.scheduler in SCHEDULER_NAMES and params.scheduler not in self.family.schedulers:
            found.append(
                (
                    "scheduler",
                    "scheduler_unsupported",
                    f"Model {self.name} runs with {', '.join(self.family.schedulers)} only.",
                )
            )
        return found

    def describe(self) -> dict[str, Any]:
        """The public description: what the models list shows."""
        return {
            "name": self.name,
            "family": self.family.name,
            "defaults": dict(self.defaults),
            "limits": {name: list(bounds) for name, bounds in self.limits.ranges().items()},
            "negative_prompt": self.family.negative_prompt,
            "schedulers": list(self.family.schedulers),
            "cost_weight": self.cost_weight,
        }
