"""Time mlrpl's mean_average_precision on a COCO-val-sized score matrix (40,504 x 80).

    python bench/metrics.py [--reference /path/to/HCP-MLR-PL]

With --reference, also time the official Compute_mAP_VOC2012 on the same matrix and compare.
"""
import argparse, sys, time
from pathlib import Path

import numpy as np

from mlrpl.metrics import mean_average_precision

N, C, POS_RATE = 40_504, 80, 0.03


def best_of(fn, repeats):
    "Best wall time of `repeats` calls, and the last result."
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter(); out = fn(); times.append(time.perf_counter() - t0)
    return min(times), out


def main(reference=None, repeats=7):
    rng = np.random.default_rng(0)
    targets = np.where(rng.random((N, C)) < POS_RATE, 1, -1).astype(np.int8)
    scores = (rng.normal(size=(N, C)) + 2*(targets > 0)).astype(np.float32)
    print(f"scores: {N} x {C} float32, {(targets > 0).mean():.1%} positive")

    ours, m = best_of(lambda: mean_average_precision(scores, targets), repeats)
    neg = np.ascontiguousarray(-scores.T)
    floor, _ = best_of(lambda: np.argsort(neg, axis=1), repeats)  # what a sort-everything AP pays
    print(f"ours: {ours:.4f} s")
    print(f"full argsort of every class (the official sort): {floor:.4f} s")
    if reference is None: return
    np.float, np.int = float, int  # aliases the official code still uses
    sys.path.insert(0, str(reference))
    from utils.metrics import Compute_mAP_VOC2012
    pred = np.concatenate([scores, (targets > 0).astype(np.float32)], 1).astype(np.float32)  # as the official Validate
    official, m_off = best_of(lambda: Compute_mAP_VOC2012(pred, C), 1)
    print(f"official: {official:.2f} s")
    print(f"speed-up: {official/ours:.1f}x")
    print(f"max |diff|: {abs(m - m_off):.1e}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference", type=Path, help="checkout of the official HCP-MLR-PL code")
    ap.add_argument("--repeats", type=int, default=7)
    a = ap.parse_args()
    main(a.reference, a.repeats)
