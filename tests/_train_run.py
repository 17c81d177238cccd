"""One small training run, for the resume and multi-process tests: `python tests/_train_run.py OUT [options]`."""
import argparse
import atexit
import json
import os
import sys
from pathlib import Path

import torch
from torch import nn
from torchvision import transforms as T

from mlrpl.data import get_dataset, label_graph
from mlrpl.embeddings import class_embeddings
from mlrpl.methods import get
from mlrpl.trainer import Trainer, TrainConfig, world


def _no_gloo_thread_in_the_teardown():
    """Registered before a Trainer joins the group, so it runs after the Trainer's exit handler has left it: a gloo
    thread still alive here would run on into the interpreter's teardown, where one that touches Python aborts the
    process (rarely: 1 run in ~400). Fail every such run instead, whatever the timing."""
    left = []
    for t in Path("/proc/self/task").iterdir():
        try: name = (t / "comm").read_text().strip()
        except FileNotFoundError: continue  # a thread that ended while listed
        if "gloo" in name: left.append(name)
    if left:
        print(f"{__file__}: threads outlive the process group at exit: {left}", file=sys.stderr, flush=True)
        os._exit(3)


if "TORCHELASTIC_RUN_ID" in os.environ and Path("/proc/self/task").is_dir(): atexit.register(_no_gloo_thread_in_the_teardown)


def build(method, data, known_prop=0.5, pseudo_start=1, dtype=torch.float32):
    "A model and its train/test sets; `dtype=torch.float64`: the model's weights and the images in float64."
    tf = T.Compose([T.Resize(32), T.ToTensor(), *([T.ConvertImageDtype(dtype)] if dtype != torch.float32 else [])])
    train = get_dataset("fashionscenes", data, "train", transform=tf, known_prop=known_prop)
    test = get_dataset("fashionscenes", data, "test", transform=tf)
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Conv2d(3, 16, 8, stride=8), nn.ReLU())  # no BatchNorm: its batch statistics are per process
    kw = dict(num_classes=10, backbone=backbone, img_dim=16)
    if method not in ("bce", "an", "durand"):
        kw.update(adjacency=label_graph(train.partial), word_embeddings=class_embeddings(train.class_names), inter_dim=8, out_dim=16)
    if method in ("sst", "hst"): kw["pseudo_start"] = pseudo_start
    if method in ("sarb", "dsrb"): kw["blend_start"] = pseudo_start
    if method == "dsrb": kw["map_size"] = 4
    return get(method, **kw).to(dtype), train, test


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--method", default="an")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--known", type=float, default=1.0)
    ap.add_argument("--val", type=float, default=0.0)
    ap.add_argument("--float64", action="store_true", help="train in float64 (weights and images)")
    a = ap.parse_args()
    model, train, test = build(a.method, a.data, a.known, dtype=torch.float64 if a.float64 else torch.float32)
    cfg = TrainConfig(epochs=a.epochs, batch_size=a.batch, lr=1e-2, val_fraction=a.val, progress=False, checkpoint=False)
    t = Trainer(model, train, test, cfg)
    summary = t.fit()
    if world()[0] == 0:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(dict(summary=summary, weights={k: v.tolist() for k, v in model.state_dict().items()})))
