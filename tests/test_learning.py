"""Each method family learns, and its mechanism acts, on the small digits scenes the suite builds (256 training /
128 test scenes, 30 % of the label entries known, the shipped GarmentNet trunk, 10 epochs; seconds a method):
SST and HST generate pseudo labels more precise than chance, SARB and DSRB blend entries and learn α and β, CLSL
recovers labels, and every method's test mAP rises well above the untrained model's."""
import numpy as np
import pytest
import torch
from torchvision import transforms as T

from mlrpl.backbones import get_backbone
from mlrpl.data import get_dataset, label_graph
from mlrpl.embeddings import class_embeddings
from mlrpl.fashionscenes import write_fashion_scenes
from mlrpl.garmentnet import GARMENT_MEAN, GARMENT_STD
from mlrpl.methods import get
from mlrpl.trainer import Trainer, TrainConfig

START = 3  # the first epoch of pseudo labels, prototypes and blending (of 10)
CASES = {  # method: its options; the laptop values of the main grid (margins, θ's start) at this scale
    "bce": {},
    "sst": dict(pseudo_start=START, margin_start=0.6, margin_floor=0.6),
    "hst": dict(pseudo_start=START, prototype_every=1, threshold_init=0.6),
    "sarb": dict(blend_start=START, prototype_every=1),
    "dsrb": dict(blend_start=START, prototype_every=1, map_size=7),
    "clsl": dict(map_size=7, num_heads=2, ffn_dim=64, att_dim=32),
}


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    root = write_fashion_scenes(tmp_path_factory.mktemp("scenes"), n_train=256, n_val=128, source="digits")
    tf = T.Compose([T.ToTensor(), T.Normalize(GARMENT_MEAN, GARMENT_STD)])
    return (get_dataset("fashionscenes", root, "train", transform=tf, known_prop=0.3),
            get_dataset("fashionscenes", root, "test", transform=tf))


def train(method, splits):
    train, test = splits
    torch.manual_seed(0)
    backbone = get_backbone("garmentnet", pretrained="fashion-mnist", out_dim=32)  # 84 px -> a 7 x 7 map
    kw = dict(num_classes=10, backbone=backbone, img_dim=32, **CASES[method])
    if method == "clsl": kw["word_embeddings"] = class_embeddings(train.class_names)
    elif method != "bce":
        kw.update(adjacency=label_graph(train.partial), word_embeddings=class_embeddings(train.class_names), inter_dim=16, out_dim=32)
    with torch.random.fork_rng():
        torch.set_num_threads(1)
        t = Trainer(get(method, **kw), train, test, TrainConfig(epochs=10, batch_size=16, lr=1e-3, val_fraction=0.0,
                                                                 seed=0, progress=False, checkpoint=False))
        start = t.evaluate(test)[0]["mAP"]
        t.fit()
    return start, t.history


def chance(train) -> float:
    "The share of hidden entries that are positive: the precision of pseudo labels drawn at random."
    hidden = train.partial == 0
    return float(((train.labels > 0) & hidden).sum() / hidden.sum())


def pooled(history, kind):
    "(generated, precision) of the pseudo labels of `kind` over every epoch."
    gen = np.array([h.get(f"pseudo_{kind}_generated", 0) for h in history], float)
    prec = np.nan_to_num(np.array([h.get(f"pseudo_{kind}_precision", np.nan) for h in history], float))
    return gen.sum(), (gen*prec).sum()/max(gen.sum(), 1)


@pytest.mark.parametrize("method", list(CASES))
def test_the_method_learns_and_its_mechanism_acts(method, splits):
    start, history = train(method, splits)
    end, p0 = history[-1]["test_mAP"], chance(splits[0])
    # Measured on this machine (seed 0): the untrained models rank at 0.30-0.34 mAP, bce reaches 0.71 and every
    # method >= 0.62. Chance precision is 0.26; pooled over the epochs, sst's CST pseudo labels are 0.65 precise
    # (1,658 of them), hst's 0.48 (2,587), clsl's recovered labels 0.40 (9,179). With SST's official margins
    # (0.95 -> 0.75) CST makes 36 pseudo labels in 7 epochs here, which the count below refuses.
    assert end > start + 0.2, f"{method}: test mAP {start:.3f} -> {end:.3f}"
    if method in ("sst", "hst"):
        assert all(h.get("pseudo_cst_generated", 0) == 0 for h in history[:START]), "pseudo labels before pseudo_start"
        n, precision = pooled(history, "cst")
        assert n >= 100 and precision > p0 + 0.15, f"{method}: {n:.0f} CST pseudo labels at precision {precision:.2f}, chance {p0:.2f}"
    if method in ("sarb", "dsrb"):
        kinds = ("ilrb", "plrb") if method == "sarb" else ("iprb", "pprb")
        for kind in kinds:
            blended = [h.get(f"train_blend_{kind}_entries", 0) for h in history]
            assert not any(blended[:START]) and all(b > 0 for b in blended[START:]), f"{kind} entries per step: {blended}"
        assert history[-1]["train_alpha"] != 0.5 and history[-1]["train_beta"] != 0.5  # learned from alpha_init = beta_init = 0.5
    if method == "clsl":
        n, precision = pooled(history, "recovered")
        recall = history[-1]["pseudo_recovered_recall"]
        assert n > 0 and precision > p0 + 0.1 and recall > 0.5, f"clsl: {n:.0f} recovered at precision {precision:.2f} (chance {p0:.2f}), recall {recall:.2f}"
