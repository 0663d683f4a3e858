"""Plain descriptions of what to generate, shared by web and worker (no torch here)."""

from __future__ import annotations

from dataclasses import dataclass

# "default" keeps the scheduler the model was saved with; the others replace it per batch.
SCHEDULER_NAMES: tuple[str, ...] = ("default", "pndm", "euler", "euler_a", "dpmpp_2m", "ddim")


@dataclass(frozen=True, kw_only=True)
class GenerationRequest:
    prompt: str
    negative_prompt: str = ""
    width: int = 512
    height: int = 512
    steps: int = 25
    guidance_scale: float = 7.5
    seed: int = 0
    scheduler: str = "default"
    num_images: int = 1

    @property
    def batch_key(self) -> tuple[int, int, int, float, str]:
        """Requests with equal keys can share one pipeline call."""
        return (self.width, self.height, self.steps, self.guidance_scale, self.scheduler)
