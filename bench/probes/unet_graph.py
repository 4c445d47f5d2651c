"""Probe: what the UNet step itself could still win inside the plain SDXL call (issue 17's SDXL
goal), on one GPU. Times the plain `pipe(...)` call eagerly, with channels-last convolutions,
and with the UNet forward replayed from a CUDA graph (host launch gaps removed), all in one
process on the same random-weight SDXL-size pipeline, and says how far each one's images are
from the eager call's.

    python3 bench/probes/unet_graph.py [--batch 4] [--steps 30] [--size 1024] [--calls 3]

Prints one JSON line per configuration (image_std tells whether the random-weight images vary at
all, so that a zero difference means something), then a summary line. A probe, not a product path: it
patches the pipeline's UNet in place.
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def graphed(unet):
    """Replace `unet.forward` with one that replays a CUDA graph per input shape (captured on its
    first call with that shape, after two warm-up calls on a side stream)."""
    eager = unet.forward
    graphs: dict[tuple, tuple] = {}

    def forward(sample, timestep, encoder_hidden_states, timestep_cond=None, cross_attention_kwargs=None,
                added_cond_kwargs=None, return_dict=True, **rest):
        assert timestep_cond is None and cross_attention_kwargs is None and not rest
        timestep = torch.as_tensor(timestep, device=sample.device)
        inputs = [sample, timestep, encoder_hidden_states, added_cond_kwargs["text_embeds"],
                  added_cond_kwargs["time_ids"]]
        key = tuple((tuple(x.shape), x.dtype) for x in inputs)
        if key not in graphs:
            static = [x.clone() for x in inputs]

            def call():
                return eager(static[0], static[1], static[2],
                             added_cond_kwargs={"text_embeds": static[3], "time_ids": static[4]},
                             return_dict=False)[0]

            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(2):
                    call()
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                out = call()
            graphs[key] = (graph, static, out)
        graph, static, out = graphs[key]
        for slot, x in zip(static, inputs):
            slot.copy_(x)
        graph.replay()
        result = out.clone()
        return (result,) if not return_dict else type("Out", (), {"sample": result})()

    unet.forward = forward
    return unet


def timed_calls(pipe, prompts, steps, size, calls):
    """Seconds per image over `calls` calls after one warm-up call; the last call's images."""
    def one(seed):
        generator = torch.Generator("cuda").manual_seed(seed)
        return pipe(prompts, num_inference_steps=steps, guidance_scale=5.0, height=size, width=size,
                    generator=generator, output_type="np").images
    one(0)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for call in range(calls):
        images = one(call + 1)
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / (calls * len(prompts)), images


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--configs", default="eager,channels-last,graph,graph+channels-last")
    args = parser.parse_args()

    from onepiece_hpc.models.sdxl.real_size import sdxl_base

    torch.manual_seed(0)
    with torch.device("cuda"):
        pipe = sdxl_base()
    pipe.to(torch.float16)
    pipe.set_progress_bar_config(disable=True)
    prompts = [f"a lighthouse on a cliff at dusk, study {i}" for i in range(args.batch)]
    results, reference = {}, None
    for config in args.configs.split(","):
        pipe.unet.to(memory_format=torch.channels_last if "channels-last" in config else torch.contiguous_format)
        pipe.unet.forward = type(pipe.unet).forward.__get__(pipe.unet)
        if "graph" in config:
            graphed(pipe.unet)
        seconds, images = timed_calls(pipe, prompts, args.steps, args.size, args.calls)
        if reference is None:
            reference = images
        diff = float(abs(images.astype("float64") - reference.astype("float64")).max())
        results[config] = seconds
        print(json.dumps({"config": config, "s_per_image": round(seconds, 4),
                          "vs_eager": round(seconds / results[args.configs.split(",")[0]], 4),
                          "max_abs_diff_vs_first": diff, "image_std": float(images.std()),
                          "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)}), flush=True)
    print(json.dumps({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "batch": args.batch,
                      "steps": args.steps, "size": args.size, "calls": args.calls}))


if __name__ == "__main__":
    main()
