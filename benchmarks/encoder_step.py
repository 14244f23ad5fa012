"""Throughput and peak memory of one training step of a BEATs-size encoder (the iter3
architecture, 90 M parameters, random weights: no checkpoint needed) under the margin loss:
10 s clips at 16 kHz, Kaldi filterbank on the device, forward, sub-cluster AdaCos, backward,
AdamW step. Modes: LoRA (rank 8, q/v), full fine-tuning, full with gradient checkpointing;
fp32 on the CPU, bf16 autocast on a GPU.

    python benchmarks/encoder_step.py                 # CPU (batch 2) and, when present, the GPU (batch 32)
    python benchmarks/encoder_step.py --no-cpu        # the GPU rows only (what gpu_check runs)
    python benchmarks/encoder_step.py --quick         # a tiny BEATs, seconds (tests/test_pretrained_encoders.py)

Writes ``encoder_step.json`` to ``--out`` (``$OUT`` when set); ``benchmarks/gpu_check.py`` runs it.
Each mode runs in a fresh process (``--quick``: all in this one). Peak memory: ``torch.cuda.max_memory_allocated`` on the GPU;
on the CPU the process's peak resident set (``ru_maxrss``: Python, torch, the model and the step),
beside its resident set once the model is built (``model_rss_mib``).
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from asd_lightning.models.components.encoders.beats import BEATs, BEATsBackbone, ITER3
from asd_lightning.models.components.encoders.pretrained import PretrainedEncoder
from asd_lightning.models.components.sub_cluster_adacos import SubClusterAdaCos

MODES = {"lora": dict(finetune="lora", lora={"rank": 8, "alpha": 16}),
         "full": dict(finetune="full"),
         "full_checkpointed": dict(finetune="full", gradient_checkpointing=True)}
TINY = dict(ITER3, encoder_layers=2, encoder_embed_dim=32, encoder_ffn_embed_dim=64, encoder_attention_heads=4,
            embed_dim=24, conv_pos=16, conv_pos_groups=4, num_buckets=32, max_distance=64)


def checkpoint_file(folder: Path, cfg: dict) -> Path:
    path = folder / "beats_random.pt"
    torch.save({"cfg": cfg, "model": BEATs(cfg).state_dict()}, path)
    return path


def step_time(path: Path, mode: str, device: str, batch: int, seconds: float, steps: int) -> dict[str, Any]:
    torch.manual_seed(0)
    encoder = PretrainedEncoder(functools.partial(BEATsBackbone), checkpoint=str(path), embedding_dim=256,
                                **MODES[mode]).to(device).train()
    loss = SubClusterAdaCos(256, 8).to(device)
    optimizer = torch.optim.AdamW([p for p in encoder.parameters() if p.requires_grad], lr=1e-4)
    wave = 0.1 * torch.randn(batch, 1, 1, int(16000 * seconds), device=device)
    y = torch.nn.functional.one_hot(torch.arange(batch, device=device) % 8, 8).float()
    gpu = device.startswith("cuda")
    model_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if gpu:
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(steps + 1):  # the first step warms up
        if gpu:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast(device_type="cuda" if gpu else "cpu", dtype=torch.bfloat16, enabled=gpu):
            value = loss(encoder(wave), y)
        value.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if gpu:
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - t0)
    peak = (torch.cuda.max_memory_allocated() / 2 ** 20 if gpu
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"mode": mode, "device": device, "batch": batch, "clip_seconds": seconds, "steps": steps,
            "trainable_parameters": encoder.trainable_parameters(),
            "parameters": sum(p.numel() for p in encoder.parameters()),
            "seconds_per_step": sum(times) / len(times), "clips_per_second": batch * len(times) / sum(times),
            "peak_memory_mib": round(peak, 1), "model_rss_mib": None if gpu else round(model_rss, 1),
            "precision": "bf16-mixed" if gpu else "32-true"}


def in_child(path: Path, mode: str, device: str, batch: int, seconds: float, steps: int) -> dict[str, Any]:
    """:func:`step_time` in a fresh process (its own peak memory)."""
    root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    job = json.dumps([str(path), mode, device, batch, seconds, steps])
    done = subprocess.run([sys.executable, __file__, "--child", job], env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"encoder step {mode} on {device} failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=os.environ.get("OUT") or str(Path(__file__).parent / "encoder_step"))
    p.add_argument("--quick", action="store_true", help="a tiny BEATs, 1 s clips (a smoke run)")
    p.add_argument("--no-gpu", action="store_true")
    p.add_argument("--no-cpu", action="store_true", help="skip the CPU rows (when a GPU is present)")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        path, *rest = json.loads(args.child)
        print(json.dumps(step_time(Path(path), *rest)), flush=True)
        return {}
    cfg = TINY if args.quick else ITER3
    modes = list(MODES)
    skipped = {}
    if importlib.util.find_spec("peft") is None:  # e.g. a bare GPU image: LoRA needs the encoders extra
        modes.remove("lora")
        skipped["lora"] = "peft is not installed (pip install 'asd-lightning[encoders]')"
    gpu = torch.cuda.is_available() and not args.no_gpu
    devices = ([] if args.no_cpu and gpu else [("cpu", 2)]) + ([("cuda", 32)] if gpu else [])
    with tempfile.TemporaryDirectory() as tmp:
        path = checkpoint_file(Path(tmp), cfg)
        run = step_time if args.quick else in_child  # quick: in this process (a smoke run; one peak for all)
        rows = [run(path, mode, device, 2 if args.quick else batch, 1.0 if args.quick else 10.0,
                          1 if args.quick else args.steps)
                for device, batch in devices for mode in modes]
    results = {"quick": args.quick, "torch": torch.__version__, "threads": torch.get_num_threads(),
               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "results": rows, "skipped": skipped}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "encoder_step.json").write_text(json.dumps(results, indent=2) + "\n")
    for row in rows:
        print(f"{row['device']:5s} {row['mode']:18s} batch {row['batch']:3d}: {row['clips_per_second']:.2f} clips/s, "
              f"peak {row['peak_memory_mib']:.0f} MiB, trainable {row['trainable_parameters']:,}", flush=True)
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
