"""Time and peak memory of CLSL's low-rank bilinear pixel-class attention, one forward + backward, side by side.

    python bench/clsl_attention.py --reference /path/to/CLSL [--batch 2] [--classes 80] [--pixels 196] [--steps 3]

The released `LowRankBilinearAttention` (models/sarlp.py, imported at run time from the checkout) applies its
1024 x 1024 `hidden_linear` to the whole (B, C, P, 1024) tensor before `target_linear` reduces it to a score;
mlrpl's composes the two linear layers first (`mlrpl.clsl_sgfe.LowRankBilinearAttention`). Both get the same
weights and inputs (COCO scale: C = 80 classes, P = 14 x 14 pixels, 2048-d pixels and class features, A = 1024).
Each side runs in fresh subprocesses: one measures the peak memory of a step above its inputs and weights
(resident memory on the CPU; allocated device memory with --device cuda), one times the steps. Prints both, the ratios and the largest difference of the scores.
"""
import argparse, json, resource, statistics, subprocess, sys, time
from pathlib import Path

import torch

D, A = 2048, 1024


def build(side, reference):
    torch.manual_seed(0)
    if side == "ours":
        from mlrpl.clsl_sgfe import LowRankBilinearAttention
        return LowRankBilinearAttention(D, D, A)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "golden"))
    from official import clsl_models_importable  # the golden-file generators' harness for the released code
    clsl_models_importable(reference)
    from models.sarlp import LowRankBilinearAttention
    return LowRankBilinearAttention(D, D, A)


def child(a):
    torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    m = build(a.side, a.reference).to(dev)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(a.batch, a.pixels, D, generator=g).to(dev).requires_grad_(True)
    v = torch.randn(a.batch, a.classes, D, generator=g).to(dev).requires_grad_(True)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    step = lambda: m(x, v).square().mean().backward()
    if a.mode == "memory":
        if dev.type == "cuda":
            base = torch.cuda.memory_allocated(); torch.cuda.reset_peak_memory_stats()
            step(); sync()
            print(json.dumps(dict(peak_mb=(torch.cuda.max_memory_allocated() - base) / 2**20)))
        else:
            base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            step()
            print(json.dumps(dict(peak_mb=(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024)))
    elif a.mode == "time":
        step(); sync()  # warm-up
        ts = []
        for _ in range(a.steps):
            t = time.perf_counter(); step(); sync(); ts.append(time.perf_counter() - t)
        print(json.dumps(dict(seconds=statistics.median(ts))))
    else:
        with torch.no_grad(): print(json.dumps(dict(scores=m(x, v).flatten()[:4096].cpu().tolist())))


def run(a, side, mode):
    cmd = [sys.executable, __file__, "--child", "--side", side, "--mode", mode, "--reference", str(a.reference),
           "--batch", str(a.batch), "--classes", str(a.classes), "--pixels", str(a.pixels), "--steps", str(a.steps),
           "--threads", str(a.threads), "--device", a.device]
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference", type=Path, required=True)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--classes", type=int, default=80)
    ap.add_argument("--pixels", type=int, default=196)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--child", action="store_true"); ap.add_argument("--side"); ap.add_argument("--mode")
    a = ap.parse_args()
    if a.child: child(a); sys.exit()
    res = {s: {**run(a, s, "memory"), **run(a, s, "time")} for s in ("official", "ours")}
    diff = max(abs(p - q) for p, q in zip(run(a, "official", "scores")["scores"], run(a, "ours", "scores")["scores"]))
    o, m = res["official"], res["ours"]
    print(f"B={a.batch} C={a.classes} P={a.pixels} D={D} A={A}, {a.device}, {a.threads} thread(s), forward + backward")
    print(f"official: {o['seconds']:.3f} s/step, peak +{o['peak_mb']:.0f} MB")
    print(f"ours:     {m['seconds']:.3f} s/step, peak +{m['peak_mb']:.0f} MB")
    print(f"time ratio {m['seconds']/o['seconds']:.2f}x, memory ratio {m['peak_mb']/o['peak_mb']:.2f}x, max |score diff| {diff:.1e}")
