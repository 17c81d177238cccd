"""What the golden-file generators share: running the official code on a CPU, and small array helpers.

The generators feed the official modules float32-representable inputs, run them in float64 (`.double()`, `t64`)
and store float64 outputs (`out64`), so that a fixture holds the exact result to ~1e-15 whatever CPU made it,
and the tests, which run mlrpl in float64 too, compare at a tolerance set by float64 rounding alone.
"""
import contextlib
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


EPS64 = float(np.finfo(np.float64).eps)  # 2.2e-16, twice float64's unit roundoff u


def sum_bound(terms, dims, extra=0):
    """How far two float64 sums of `terms` over `dims` taken in different orders can lie apart, elementwise.
    Each recursive sum of n terms is within (n - 1)·u·Σ|x| of the exact one (Higham, Accuracy and Stability of
    Numerical Algorithms, §4.2), so two are within (n - 1)·eps·Σ|x|; counted with n + 1 (one rounding more, for a
    division or a store of the result). `extra`: zero terms that one side adds as well (DSRB's zero map)."""
    dims = (dims,) if isinstance(dims, int) else tuple(dims)
    n = int(np.prod([terms.shape[d] for d in dims])) + extra
    return (n + 1)*EPS64*terms.abs().sum(dims)


def f32(a): return np.asarray(a, dtype=np.float32)
def npy(t): return t.detach().cpu().numpy()
def t32(a, grad=False): return torch.tensor(f32(a), requires_grad=grad)
def t64(a, grad=False):
    "A float64 tensor of `a`'s values rounded to float32: the fixture stores the input once, in float32, exactly."
    return torch.tensor(f32(a).astype(np.float64), requires_grad=grad)


def out64(t):
    "An official result as a float64 array; refuses a float32 one (a float32 step left in the float64 run)."
    assert t.dtype == torch.float64, f"official output in {t.dtype}, expected float64"
    return npy(t)


@contextlib.contextmanager
def float64_draws():
    """torch.rand giving float64 copies of the float32 numbers it draws (the same numbers, the same generator
    steps) inside the block, for official code that multiplies float64 values by a mask drawn with torch.rand:
    PyTorch keeps mask · (0-d float64 tensor) in float32 (SARB's and DSRB's mask · (1 - β)), value and gradient."""
    rand = torch.rand
    def rand64(*size, **kw):
        assert "dtype" not in kw and "out" not in kw, kw
        return rand(*size, **kw).double()
    torch.rand = rand64
    try: yield
    finally: torch.rand = rand


@contextlib.contextmanager
def float64_defaults():
    """torch.zeros/torch.Tensor/torch.eye... in float64 inside the block, for official functions that allocate
    buffers with the default dtype (getIntraPseudoLabel's pseudo-label matrix): without it, a float64 call rounds
    through float32 there. Only around calls that draw no random numbers (torch.rand in float64 draws others)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try: yield
    finally: torch.set_default_dtype(old)


def adjacency(labels):
    "A[i, j] = N(i, j)/N(i, i) over the positives, rows of classes without positives left at 0."
    pos = (labels == 1).astype(np.float64)
    n = pos.T @ pos
    d = np.diag(n).copy()
    return np.divide(n, d[:, None], out=np.zeros_like(n), where=d[:, None] > 0)
