"""Regenerate the golden fixtures of tests/test_golden.py from the official HCP-MLR-PL code.

    python tests/golden/make_golden.py --reference /path/to/HCP-MLR-PL

The official functions are imported from the checkout at run time; nothing of them is copied here.
"""
import argparse, os, sys, tempfile, types
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
PROPS = np.round(np.arange(1, 11)/10, 1)  # known proportions 0.1 ... 1.0


def load_reference(ref: Path):
    "Import the official modules from `ref` (they use NumPy aliases removed in NumPy 1.24)."
    np.float, np.int = float, int
    sys.path.insert(0, str(ref))
    from datasets.coco2014 import changeLabelProportion
    from utils import dataloader
    from utils.metrics import AveragePrecisionMeter, Compute_mAP_VOC2012
    return types.SimpleNamespace(changeLabelProportion=changeLabelProportion, dataloader=dataloader,
                                 AveragePrecisionMeter=AveragePrecisionMeter, Compute_mAP_VOC2012=Compute_mAP_VOC2012)


def full_labels(rng, n, c, rate):
    "Seeded {1, -1} labels in which every class has a positive and a negative."
    y = np.where(rng.random((n, c)) < rate, 1, -1)
    y[0], y[1] = 1, -1
    return y.astype(np.int8)


def official_graph(ref, labels):
    "The graph of the official get_graph_and_word_file, run where it finds a word-vector file."
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp)/"data"/"coco").mkdir(parents=True)
        np.save(Path(tmp)/"data"/"coco"/"vectors.npy", np.zeros((labels.shape[1], 1)))
        cwd = os.getcwd(); os.chdir(tmp)
        try:
            with np.errstate(invalid="ignore"):  # the official 0/0 rows
                graph, _ = ref.dataloader.get_graph_and_word_file(types.SimpleNamespace(dataset="COCO2014"), labels.astype(float))
        finally: os.chdir(cwd)
    return graph


def official_voc(ref, scores, targets):
    "mAP and per-class AP of Compute_mAP_VOC2012, fed the float32 matrix the official Validate builds."
    pred = lambda s, t: np.concatenate([s, (t > 0).astype(np.float32)], 1).astype(np.float32)
    per_class = [ref.Compute_mAP_VOC2012(pred(scores[:, [k]], targets[:, [k]]), 1) for k in range(scores.shape[1])]
    return ref.Compute_mAP_VOC2012(pred(scores, targets), scores.shape[1]), np.array(per_class)


def official_meter(ref, scores, targets):
    "Per-class AP, overall() and overall_topk(3) of the official AveragePrecisionMeter."
    meter = ref.AveragePrecisionMeter()
    meter.add(scores, (targets > 0).astype(np.int64))
    return meter.value().double().numpy(), np.array(meter.overall()), np.array(meter.overall_topk(3))


def main(ref: Path):
    ref_mods = load_reference(ref)
    rng = np.random.default_rng(2024)
    save = lambda name, **a: np.savez_compressed(HERE/f"{name}.npz", **a)

    y = full_labels(rng, 300, 20, 0.2)
    save("masking", labels=y, props=PROPS,
         partial=np.stack([ref_mods.changeLabelProportion(y, p) for p in PROPS]).astype(np.int8))

    partial = ref_mods.changeLabelProportion(full_labels(rng, 300, 20, 0.2), 0.3).astype(np.int8)
    partial[partial[:, 3] == 1, 3] = 0  # class 3: no known positive (an official NaN row)
    save("label_graph", partial=partial, graph=official_graph(ref_mods, partial))

    cases = {}
    for i, (rate, shift) in enumerate([(0.1, 1.0), (0.3, 0.5), (0.03, 2.0)]):
        t = full_labels(rng, 500, 20, rate)
        s = (rng.normal(size=t.shape) + shift*(t > 0)).astype(np.float32)
        m, ap_voc = official_voc(ref_mods, s, t)
        ap, overall, top3 = official_meter(ref_mods, s, t)
        cases.update({f"c{i}_scores": s, f"c{i}_targets": t, f"c{i}_map": m, f"c{i}_ap_voc": ap_voc,
                      f"c{i}_ap": ap, f"c{i}_overall": overall, f"c{i}_top3": top3})
    # Tied scores: the VOC AP then depends on NumPy's (unstable) argsort order, recorded to check it is reproduced.
    t = full_labels(rng, 500, 20, 0.1)
    s = np.round(rng.normal(size=t.shape) + (t > 0), 1).astype(np.float32)
    m, ap_voc = official_voc(ref_mods, s, t)
    cases.update(tie_scores=s, tie_targets=t, tie_map=m, tie_ap_voc=ap_voc,
                 tie_order=np.stack([np.argsort(-s[:, k]) for k in range(s.shape[1])]).astype(np.int16))
    save("metrics", **cases)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference", type=Path, required=True, help="checkout of the official HCP-MLR-PL code")
    main(ap.parse_args().reference.resolve())
