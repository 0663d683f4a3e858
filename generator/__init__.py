"""Text-to-image generation on Hugging Face diffusers; knows nothing of Django. The top level
stays free of torch (only ``generator.engine`` imports it), so web processes can read parameters."""

from __future__ import annotations

from generator.parameters import SCHEDULER_NAMES, GenerationParameters, ParameterLimits

__all__ = ["SCHEDULER_NAMES", "GenerationParameters", "ParameterLimits"]
