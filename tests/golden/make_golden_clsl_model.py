"""Golden fixture for CLSL's model and loss: `python tests/golden/make_golden_clsl_model.py --reference DIR`.

DIR is a checkout of the official CLSL code (github Qingdandian/CLSL). Its `SARLP` (models/sarlp.py) and the three
ablation models (sarlpwoJLS, sarlpwoSRFL, sarlpwoSRFLaJLS) are built on the CPU with small dimensions, an identity
backbone (the inputs are the tokens) and stand-in weights from tests/golden/weights.py; the fixture stores the
inputs, the weights' seed and shapes, and the released outputs: eval probabilities and pixel logits, the training
losses of both branches (dropout set to 0) and the gradient of every weight (all entries, or 512
fixed ones of a larger tensor: `sample`); plus `AsymmetricLossOptimized` on
hard masked targets and on soft targets, with its gradients. Written to tests/golden/clsl_model.npz.

Precision: the inputs and weights hold float32 values; the models and the loss run in float64 (`.double()`, float64
tokens, labels and class embeddings) and every output is stored in float64. The official sine positions are built
in float32 by their constructor (`PositionEmbeddingSine._gen_pos_buffer`, dtype=torch.float32); they are stored as
`position_embedding` (float32 values), so that a test can give mlrpl's encoder the same positions. Running it twice
gives identical files.
"""
import argparse
import json
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from official import clsl_models_importable, out64, patch_for_cpu  # noqa: E402
from weights import fill_state_dict, shapes_to_json  # noqa: E402

OUT = Path(__file__).parent / "clsl_model.npz"
B, C, E, D, H = 3, 5, 12, 32, 4  # batch, classes, embedding size, token size, map side (img_size 128 / 32)
MODELS = {"sarlp": "SARLP", "sarlpwoJLS": "SARLPWOJLS", "sarlpwoSRFL": "WOSRFL", "sarlpwoSRFLaJLS": "SARLPWOSEFLAJLS"}
SEED = 11


def sample(n: int, k: int = 512) -> np.ndarray:
    "The gradient entries kept for a tensor of n values: all of them, or k fixed ones (sorted; seeded by n)."
    return np.arange(n) if n <= k else np.sort(np.random.default_rng(n).choice(n, k, replace=False))


def npy_pe(pe):
    "The official (1, D, H, W) positions as the (P, D) rows that SARLP.forward adds to the tokens."
    return pe.flatten(2)[0].T.numpy()


def scalar64(v):
    "A loss term as a float: float64 tensors, or the plain 0 of a branch the model does not have."
    return float(out64(v.detach())) if torch.is_tensor(v) else float(v)


def no_dropout(model):
    for m in model.modules():
        if isinstance(m, nn.Dropout): m.p = 0.0
        if isinstance(m, nn.MultiheadAttention): m.dropout = 0.0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference", type=Path, required=True)
    a = ap.parse_args()
    patch_for_cpu(a.reference)
    clsl_models_importable(a.reference)
    import importlib
    from lib.aslloss import AsymmetricLossOptimized

    g = torch.Generator().manual_seed(0)
    words = torch.randn(C, E, generator=g)
    tokens = torch.randn(B, H * H, D, generator=g)
    known = torch.rand(B, C, generator=g) < 0.5
    known[0, 0] = known[1, 1] = True
    labels = (torch.rand(B, C, generator=g) < 0.4).float()
    y_official = torch.where(known, labels, torch.full_like(labels, -1.0))[:, None].double()  # (B, 1, C): -1 unknown
    res = dict(words=words.numpy(), tokens=tokens.numpy(), known=known.numpy(), labels=labels.numpy())
    shapes = {}
    with tempfile.TemporaryDirectory() as t:
        np.save(Path(t) / "glove.npy", words.numpy())
        cfg = types.SimpleNamespace(arch="resnet101", img_size=H * 32, num_heads=4, num_layers=1, normalize_before=False,
                                    embed_type="glove", embed_path=str(Path(t) / "glove.npy"), num_classes=C, loss="asl",
                                    gamma_neg=2.0, gamma_pos=0.0, clip=0.0, partial=0.5, pos=True, rm_cls=False)
        for name, cls in MODELS.items():
            Model = getattr(importlib.import_module(f"models.{name}"), cls)
            torch.manual_seed(0)
            m = Model(nn.Identity(), D, cfg)
            sd = {k: v for k, v in m.state_dict().items() if k != "position_embedding.pe"}
            shp = {k: list(v.shape) for k, v in sd.items()}
            m.load_state_dict(fill_state_dict(shp, SEED), strict=False)
            shapes[name] = shapes_to_json(shp)
            pe = m.position_embedding.pe  # (1, D, H, W), built in float32 by the constructor
            assert pe.dtype == torch.float32
            if "position_embedding" in res: assert np.array_equal(res["position_embedding"], npy_pe(pe))
            res["position_embedding"] = npy_pe(pe)  # (P, D) as SARLP.forward adds it
            m.double()
            m.embeddings = m.embeddings.double()  # a plain attribute (the class-name vectors), not moved by .double()
            m.eval()
            with torch.no_grad(): out = m(tokens.double())
            res[f"{name}_eval_prob"], res[f"{name}_eval_pixel"] = out64(out["logits"]), out64(out["alpha"])
            m.train(); no_dropout(m)
            out = m(tokens.double(), y=y_official, mask_label=known.long()[:, None])
            out["ce_loss"].backward()
            res[f"{name}_loss"] = np.array([scalar64(out[k]) for k in ("ce_loss", "loss_sam", "loss_fc")])
            res[f"{name}_train_prob"] = out64(out["logits"])
            for k, p in m.named_parameters():
                if p.grad is not None: res[f"{name}_grad/{k}"] = out64(p.grad).reshape(-1)[sample(p.numel())]
    res["shapes"] = np.array(json.dumps(shapes))
    # the loss alone, general settings included
    x = torch.randn(4, 6, generator=g) * 3
    hard = torch.where(torch.rand(4, 6, generator=g) < 0.5, (torch.rand(4, 6, generator=g) < 0.5).float(), torch.tensor(-1.0))
    soft = torch.rand(4, 6, generator=g)
    res.update(asl_x=x.numpy(), asl_hard=hard.numpy(), asl_soft=soft.numpy())
    for tag, (gn, gp, cl) in {"clsl": (2.0, 0.0, 0.0), "general": (4.0, 1.0, 0.05)}.items():
        crit = AsymmetricLossOptimized(gamma_neg=gn, gamma_pos=gp, clip=cl, disable_torch_grad_focal_loss=True, eps=1e-5)
        for kind, tgt, mask in (("hard", hard, True), ("soft", soft, False)):
            xx = x.double().requires_grad_(True)
            l = crit(xx, tgt.double(), MASK=mask)
            l.backward()
            res[f"asl_{tag}_{kind}"], res[f"asl_{tag}_{kind}_grad"] = out64(l.detach()), out64(xx.grad)
    np.savez_compressed(OUT, **res)
    print(f"wrote {OUT} ({OUT.stat().st_size/1024:.0f} KiB)")
