"""Memory of building DSRB's quadrant prototypes on a COCO-sized synthetic feature set (7×7×1024 maps).

    python bench/dsrb_prototypes.py [--classes 80] [--images 12000]

Side by side, each in a fresh process (peak resident memory above the process's baseline):
- mlrpl: `QuadrantPrototypes` — running sums and counts, the first 100 maps per (class, quadrant);
- list storage as the official routine does it: every kept map held in a per-(class, quadrant) list until the
  end, then averaged (run here on a tenth of the classes and scaled up, since at 80 classes it needs ~6.5 GB).
"""
import argparse
import resource
import subprocess
import sys
import time

H, D, B = 7, 1024, 8


def rss_mb(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024


def batches(classes, images, seed=0):
    import torch
    g = torch.Generator().manual_seed(seed)
    for _ in range(images//B):
        fmap = torch.randn(B, D, H, H, generator=g)
        att = torch.rand(B, classes, H, H, generator=g).flatten(2).softmax(-1).view(B, classes, H, H)
        target = torch.where(torch.rand(B, classes, generator=g) < 3/80*max(1, 80//classes), 1, -1)  # COCO-like ~3 positives
        yield fmap, att, target


def ours(classes, images):
    import torch
    from mlrpl.dsrb import QuadrantPrototypes
    base, t = rss_mb(), time.time()
    qp = QuadrantPrototypes(classes, D, H)
    for fmap, att, target in batches(classes, images): qp.add_batch(fmap, att, target)
    qp.finish()
    return rss_mb() - base, time.time() - t, int(qp.counts.sum())


def lists(classes, images):
    import torch
    from mlrpl.dsrb import peak_quadrant
    base, t = rss_mb(), time.time()
    store = [[[] for _ in range(4)] for _ in range(classes)]
    for fmap, att, target in batches(classes, images):
        q = peak_quadrant(att, fmap)
        for c in range(classes):
            for b in range(B):
                if target[b, c] == 1 and len(store[c][q[b, c]]) < 100:
                    store[c][q[b, c]].append((att[b, c, :, :, None]*fmap[b].permute(1, 2, 0)).clone())
    means = [[torch.stack(s).mean(0) if s else None for s in per] for per in store]
    return rss_mb() - base, time.time() - t, sum(len(s) for per in store for s in per)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--classes", type=int, default=80)
    ap.add_argument("--images", type=int, default=12000)
    ap.add_argument("--side", choices=["ours", "lists"])
    a = ap.parse_args()
    if a.side:
        mb, s, n = (ours if a.side == "ours" else lists)(a.classes, a.images)
        print(f"{mb:.0f} {s:.1f} {n}"); sys.exit()
    run = lambda side, c: subprocess.run([sys.executable, __file__, "--side", side, "--classes", str(c), "--images", str(a.images)],
                                         capture_output=True, text=True, check=True).stdout.split()
    small = max(1, a.classes//10)
    mb_o, s_o, n_o = run("ours", a.classes)
    mb_l, s_l, n_l = run("lists", small)
    scale = a.classes/small
    print(f"maps per (class, quadrant) kept: at most 100; {a.images} images of {a.classes} classes, {H}x{H}x{D}")
    print(f"mlrpl running means: peak +{float(mb_o):.0f} MB ({n_o} maps averaged, {float(s_o):.1f} s)")
    print(f"list storage: peak +{float(mb_l):.0f} MB for {small} classes ({n_l} maps) -> ~{float(mb_l)*scale/1024:.1f} GB for {a.classes} classes")
    print(f"memory ratio (mlrpl / list storage at {a.classes} classes): {float(mb_o)/(float(mb_l)*scale):.3f}")
