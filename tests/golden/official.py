"""What the golden-file generators share: running the official code on a CPU, and small array helpers."""
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn


def patch_for_cpu(ref: Path):
    "Let the official code (CUDA calls, removed NumPy aliases) run on this CPU, importable from `ref`."
    np.float, np.int = float, int
    torch.Tensor.cuda = lambda self, *a, **k: self
    nn.Module.cuda = lambda self, *a, **k: self
    sys.path.insert(0, str(ref))


def clsl_models_importable(ref: Path):
    "Let `models.*` of a CLSL checkout at `ref` import without its training-only packages (randaugment, CLIP fine-tuning)."
    import types
    sys.path.insert(0, str(ref))
    sys.modules.setdefault("randaugment", types.SimpleNamespace(RandAugment=None))
    clip = types.ModuleType("clip_fine_tuning"); clip.clip = None; sys.modules["clip_fine_tuning"] = clip
    pkg = types.ModuleType("models"); pkg.__path__ = [str(Path(ref) / "models")]; sys.modules["models"] = pkg


def f32(a): return np.asarray(a, dtype=np.float32)
def npy(t): return t.detach().cpu().numpy()
def t32(a, grad=False): return torch.tensor(f32(a), requires_grad=grad)


def adjacency(labels):
    "A[i, j] = N(i, j)/N(i, i) over the positives, rows of classes without positives left at 0."
    pos = (labels == 1).astype(np.float64)
    n = pos.T @ pos
    d = np.diag(n).copy()
    return np.divide(n, d[:, None], out=np.zeros_like(n), where=d[:, None] > 0)
