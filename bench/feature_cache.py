"""Trunk forward of a feature-cache build with the images in the default (contiguous) and in channels-last layout.

    python bench/feature_cache.py [--backbone efficientnet_lite0] [--size 112] [--images 512] [--batch 64] [--threads 2]

`build_feature_cache` feeds its trunk channels-last batches. Both layouts run the same randomly initialised trunk
(`get_backbone(name)`; the time does not depend on the weights) on the same images, batch by batch, after one warm-up
batch each, alternating three times; prints the best time of each, the time per image, the ratio and the largest
difference of the features.
"""
import argparse, time

import torch

from mlrpl.backbones import get_backbone


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--batch", type=int, default=64, help="trunk inputs a forward (a build's batch of 32 images with their mirrors)")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    trunk = get_backbone(a.backbone, input_size=a.size).trunk.eval()
    x = torch.randn(a.images, 3, a.size, a.size)
    layouts = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}
    best, out = {k: float("inf") for k in layouts}, {}
    with torch.inference_mode():
        for _ in range(3):
            for name, fmt in layouts.items():
                trunk(x[: a.batch].contiguous(memory_format=fmt))
                t = time.perf_counter()
                out[name] = torch.cat([trunk(x[i:i + a.batch].contiguous(memory_format=fmt)) for i in range(0, a.images, a.batch)])
                best[name] = min(best[name], time.perf_counter() - t)
    print(f"{a.backbone} trunk at {a.size} px, {a.images} images in batches of {a.batch}, {a.threads} thread(s)")
    for name, t in best.items(): print(f"{name:13}: {t:6.2f} s  ({1000 * t / a.images:.2f} ms an image)")
    diff = (out["channels_last"] - out["contiguous"]).abs().max().item()
    print(f"channels_last / contiguous time ratio: {best['channels_last'] / best['contiguous']:.2f}x; "
          f"max |difference| {diff:.1e} (largest |feature| {out['contiguous'].abs().max().item():.1f})")


if __name__ == "__main__":
    main()
