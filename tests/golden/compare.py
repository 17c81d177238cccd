"""How the golden tests compare mlrpl with a fixture: both sides in float64, a tolerance set by float64 rounding.

The fixtures hold the official code's outputs computed in float64 (the generators' `official.out64`), and the tests
run mlrpl in float64 on the same float32-valued inputs and weights. What then separates the two is float64 rounding
in whatever order a CPU's kernels add: the worst-case forward error of L layers of n-term dot products is about
L·n·u times the size of the values summed (Higham, Accuracy and Stability of Numerical Algorithms, §3.1), with
u = 2^-53 ≈ 1.1e-16, whatever the order. So `close` allows |actual - desired| <= rtol · max|desired| over the array
(an absolute tolerance at the arrays' scale: a sum that cancels to ~0 keeps the absolute error of its terms), with

- SMALL = 1e-11 for one module, loss, pseudo-label rule or blend: L·n <= 10 · 100 gives L·n·u <= 1.1e-13, a margin of
  >= 90x; a real mismatch (another formula, a float32 step: >= 1e-8 relative) lies >= 1000x above it.
- MODEL = 1e-9 for a whole network (ResNet-101 at 128 px, the CLIP ResNet at 96 px, CLSL's encoder and heads):
  L·n <= 104 layers · 4608 (a 3 x 3 x 512 convolution) gives L·n·u <= 5.3e-11, a margin of >= 19x on the worst
  case (the errors measured are ~1e-14); a float32 step shows at >= 1e-8, another formula at >= 1e-4.

A comparison that is exact by construction (copies, masks, 0/1 pseudo labels, integer counts) stays exact, and
float32 results of mlrpl that cannot run in float64 get their own tolerance, derived beside the assert.
"""
import numpy as np
import torch

SMALL = 1e-11  # modules, losses, pseudo labels, blends (see the module docstring)
MODEL = 1e-9  # whole networks
U32 = 2.0**-24  # float32 unit roundoff: one rounding moves a value by at most U32 times its size
U64 = 2.0**-53  # float64 unit roundoff


def as64(a) -> torch.Tensor:
    "A fixture array (float32 or float64 values) as a float64 tensor, its values unchanged."
    return torch.as_tensor(np.asarray(a, np.float64))


def close(actual, desired, rtol: float, what: str = ""):
    "|actual - desired| <= rtol · max|desired|, both float64 (mlrpl's result and the fixture's official one)."
    a = actual.detach().cpu().numpy() if torch.is_tensor(actual) else np.asarray(actual)
    d = np.asarray(desired)
    assert a.dtype == np.float64, f"{what}: mlrpl's result is {a.dtype}; the golden tests run mlrpl in float64"
    assert d.dtype == np.float64, f"{what}: the fixture holds {d.dtype}; regenerate it (outputs are stored in float64)"
    scale = float(np.nanmax(np.abs(d), initial=0.0)) if d.size else 0.0
    np.testing.assert_allclose(a, d, rtol=0, atol=rtol*scale, err_msg=what)
