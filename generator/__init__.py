"""Text-to-image generation on Hugging Face diffusers. Knows nothing of Django.

This package's top level stays free of torch so that web processes can read the allow-lists
below without loading the GPU stack; ``generator.engine`` is the part that imports torch.
"""

from __future__ import annotations

from generator.requests import SCHEDULER_NAMES, GenerationRequest

__all__ = ["SCHEDULER_NAMES", "GenerationRequest"]
