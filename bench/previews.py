"""What previews cost the worker: the same generations with previews off, with the linear
projection and with TAESD, taking turns in one run, on a Stable Diffusion 1.5 architecture
(random weights, built in code) at 512 px, the page's default size.

    .venv/bin/python bench/previews.py                    # SD 1.5 shape, 512 px, 8 steps, 3 rounds
    .venv/bin/python bench/previews.py --reduced --size 256 --steps 10   # narrow widths: a quick look

Previews are rendered every ``--every`` steps (PREVIEW_EVERY_STEPS, 5). It reports the time of
each step and of each preview render (projection or decode, resize, WebP encode), measured inside
the same runs, so preview time / step time is a ratio of one run under one load. The Redis
write of a preview (one pipelined round trip, ~0.2 ms) is not included.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from full_size_models import build_sd15_model

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--every", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3, help="turns of off / linear / TAESD")
    parser.add_argument("--reduced", action="store_true", help="narrow SD 1.5 (seconds on a CPU)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    import torch
    from diffusers import AutoencoderTiny

    from generator.engine import Engine
    from generator.parameters import GenerationParameters
    from generator.previews import PreviewRenderer

    model = ROOT / "var" / "bench" / ("sd15-reduced" if args.reduced else "sd15-full")
    if not (model / "model_index.json").exists():
        started = time.perf_counter()
        build_sd15_model(model, reduced=args.reduced)
        print(f"built {model} in {time.perf_counter() - started:.0f} s")
    engine = Engine.load(str(model))
    torch.manual_seed(0)
    # TAESD's own architecture (the class defaults), random weights: the same work as the real one.
    taesd = AutoencoderTiny().to(engine.device, engine.pipeline.dtype).eval()  # type: ignore[attr-defined]
    renderers: dict[str, PreviewRenderer | None] = {
        "off": None,
        "linear": PreviewRenderer(image_format="webp"),
        "taesd": PreviewRenderer(image_format="webp", taesd=taesd),
    }
    request = GenerationParameters(
        prompt="a lighthouse at dusk",
        width=args.size,
        height=args.size,
        steps=args.steps,
        guidance_scale=7.5,
        seed=1,
        model="tiny-sd",
    )
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; {engine.device}")
    engine.generate([request.__class__(**{**request.__dict__, "steps": 1})])  # warm-up

    step_seconds: dict[str, list[float]] = {name: [] for name in renderers}
    run_seconds: dict[str, list[float]] = {name: [] for name in renderers}
    render_seconds: dict[str, list[float]] = {name: [] for name in renderers}
    for _round in range(args.rounds):
        for name, renderer in renderers.items():
            last = [time.perf_counter()]

            def on_latents(step: int, latents: Any, renderer: Any = renderer, name: str = name) -> None:
                if renderer is None or step % args.every:
                    return
                started = time.perf_counter()
                renderer.render(latents, [0], width=args.size, height=args.size)
                render_seconds[name].append(time.perf_counter() - started)

            def on_step(step: int, total: int, name: str = name, last: list[float] = last) -> None:
                now = time.perf_counter()
                step_seconds[name].append(now - last[0])
                last[0] = now

            started = time.perf_counter()
            engine.generate([request], on_step=on_step, on_latents=on_latents)
            run_seconds[name].append(time.perf_counter() - started)
    print(f"load average after: {os.getloadavg()[0]:.2f}")

    plain_step = statistics.median(step_seconds["off"])
    print(f"\n{args.size} px, {args.steps} steps, a preview every {args.every} steps, {args.rounds} rounds")
    print(
        f"{'previews':<8} {'run s':>8} {'step s':>8} {'render ms':>10} {'render/step':>12} {'per step':>9} {'run vs off':>11}"
    )
    for name in renderers:
        run = statistics.median(run_seconds[name])
        step = statistics.median(step_seconds[name])
        render = statistics.median(render_seconds[name]) if render_seconds[name] else 0.0
        # What previews add to an average step: one render every ``every`` steps.
        per_step = render / args.every / plain_step
        print(
            f"{name:<8} {run:>8.2f} {step:>8.3f} {render * 1000:>10.1f} {render / plain_step:>11.2%} "
            f"{per_step:>8.2%} {run / statistics.median(run_seconds['off']):>10.3f}x"
        )


if __name__ == "__main__":
    main()
