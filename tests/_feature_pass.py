"""Trainer.feature_pass of an hst model, saved by rank 0: `python tests/_feature_pass.py OUT DATA BATCH VAL` (or under torchrun)."""
import sys
from pathlib import Path

import torch

from _train_run import build
from mlrpl.trainer import Trainer, TrainConfig, world

if __name__ == "__main__":
    out, data, batch, val = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    model, train, test = build("hst", data, 1.0, dtype=torch.float64)
    t = Trainer(model, train, test, TrainConfig(epochs=1, batch_size=batch, lr=1e-2, val_fraction=val, progress=False, checkpoint=False))
    parts = [(o["features"].cpu(), p.cpu()) for o, p in t.feature_pass()]
    if world()[0] == 0: torch.save(dict(features=torch.cat([f for f, _ in parts]), partial=torch.cat([p for _, p in parts]),
                                        slice=len(t.train_set)), out)
