"""Golden fixture for CLSL's partial-label mask: `python tests/golden/make_golden_clsl.py --reference DIR`.

DIR is a checkout of the official CLSL code (github Qingdandian/CLSL). Its `lib.dataset.MLDataset` is built on a
small label file after the official `setup_seed(0)`, for known proportions 0.1 … 0.9, and its masks are saved with
the label matrix to tests/golden/clsl_mask.npz. Its image augmentation package (randaugment) is not needed to
draw the mask and is replaced by a stand-in.
"""
import argparse
import sys
import tempfile
import types
from pathlib import Path

import numpy as np

OUT = Path(__file__).parent / "clsl_mask.npz"

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference", type=Path, required=True)
    a = ap.parse_args()
    sys.modules["randaugment"] = types.SimpleNamespace(RandAugment=lambda *x, **k: (lambda img: img))
    sys.path.insert(0, str(a.reference))
    from lib.dataset import MLDataset
    from lib.util import setup_seed

    rng = np.random.default_rng(7)
    n, c = 300, 20
    positives = [sorted(rng.choice(c, rng.integers(1, 4), replace=False).tolist()) for _ in range(n)]
    props = np.round(np.arange(0.1, 1.0, 0.1), 1)
    masks = []
    with tempfile.TemporaryDirectory() as t:
        t = Path(t)
        (t / "labels.txt").write_text("".join(f"class{j}\n" for j in range(c)))
        (t / "train.txt").write_text("".join(f"img{i}.jpg\t{','.join(f'class{j}' for j in p)}\n" for i, p in enumerate(positives)))
        (t / "toy").mkdir()
        for p in props:
            cfg = types.SimpleNamespace(label_path=str(t / "labels.txt"), partial=float(p), org_path=str(t), data="toy",
                                        img_size=32, orid_norm=False)
            setup_seed(0)
            masks.append(MLDataset(str(t / "train.txt"), cfg, training=True).mask[:, 0].numpy().astype(bool))
    labels = -np.ones((n, c), np.int8)
    for i, p in enumerate(positives): labels[i, p] = 1
    np.savez_compressed(OUT, labels=labels, known_prop=props, masks=np.stack(masks))
    print(f"wrote {OUT}")
