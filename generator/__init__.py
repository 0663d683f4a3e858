"""Text-to-image generation on Hugging Face diffusers. Knows nothing of Django.

This package's top level stays free of torch so that web processes can read the parameters
and their limits below without loading the GPU stack; ``generator.engine`` imports torch.
"""

from __future__ import annotations

from generator.parameters import SCHEDULER_NAMES, GenerationParameters, ParameterLimits

__all__ = ["SCHEDULER_NAMES", "GenerationParameters", "ParameterLimits"]
