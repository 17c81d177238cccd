"""Golden tests: mlrpl's CLSL (encoder, SRFL, SGFE, recovered labels, the collaborative loss, its ablation switches)
equals the released CLSL models on the inputs, weights and outputs stored in tests/golden/clsl_model.npz
(made by make_golden_clsl_model.py)."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

GOLDEN = Path(__file__).parent / "golden"
sys.path.insert(0, str(GOLDEN))
from make_golden_clsl_model import B, C, D, H, SEED, sample  # noqa: E402
from weights import fill_state_dict, shapes_from_json  # noqa: E402

from mlrpl.clsl import clsl_asl, from_official, recover_labels
from mlrpl.methods import METHODS, StepContext

Z = np.load(GOLDEN / "clsl_model.npz")
SWITCHES = {"sarlp": {}, "sarlpwoJLS": dict(use_recovery=False),
            "sarlpwoSRFL": dict(use_srfl=False, embedding_mlp=False, use_recovery=False),
            "sarlpwoSRFLaJLS": dict(use_srfl=False, use_recovery=False)}


def close(a, b, tol=1e-5):
    a = np.asarray(a.detach() if torch.is_tensor(a) else a, np.float64)
    b = np.asarray(b, np.float64)
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol * max(1.0, float(np.abs(b).max(initial=0))))


def build(name):
    m = METHODS.get("clsl", backbone=nn.Identity(), num_classes=C, word_embeddings=Z["words"], img_dim=D, map_size=H,
                    num_heads=4, ffn_dim=2048, att_dim=1024, encoder_dropout=0.0, mlp_dropout=0.0, **SWITCHES[name])
    shapes = shapes_from_json(json.loads(str(Z["shapes"]))[name])
    missing, unexpected = m.load_state_dict(from_official(fill_state_dict(shapes, SEED)), strict=False)
    assert (set(missing), unexpected) == ({"words"}, []), (missing, unexpected)
    return m


def inputs():
    fmap = torch.as_tensor(Z["tokens"]).transpose(1, 2).reshape(B, D, H, H)  # the released model's tokens as a map
    known, labels = torch.as_tensor(Z["known"]), torch.as_tensor(Z["labels"])
    target = torch.where(known, torch.where(labels > 0, 1, -1), 0)  # mlrpl's {1, 0, -1}
    return fmap, target


@pytest.mark.parametrize("name", list(SWITCHES))
def test_eval_outputs(name):
    m = build(name).eval()
    fmap, _ = inputs()
    with torch.no_grad(): out = m(fmap)
    close(torch.sigmoid(out["logits"]), Z[f"{name}_eval_prob"])
    close(out["pixel_logits"].transpose(1, 2), Z[f"{name}_eval_pixel"])  # released 'alpha': (B, C, P)


@pytest.mark.parametrize("name", list(SWITCHES))
def test_training_loss_and_gradients(name):
    m = build(name).train()
    fmap, target = inputs()
    out = m(fmap)
    loss, logs, _ = m.loss(out, target, StepContext(epoch=0))
    loss.backward()
    ce, sam, fc = Z[f"{name}_loss"]
    close(loss, ce); close(logs["loss_refined"], fc)
    if "loss_global" in logs: close(logs["loss_global"], sam)
    close(torch.sigmoid(out["logits"]), Z[f"{name}_train_prob"])
    params = dict(m.named_parameters())
    keys = [k[len(f"{name}_grad/"):] for k in Z.files if k.startswith(f"{name}_grad/")]
    assert keys
    for k in keys:
        (ours,) = from_official({k: torch.zeros(1)})  # the same weight's name here
        g = params[ours].grad.reshape(-1)
        close(g[sample(g.numel())], Z[f"{name}_grad/{k}"])


def test_recovered_labels_rule():
    "The released rule: known entries keep their labels, unknown ones get σ(s1 · max s1), without gradient."
    torch.manual_seed(0)
    s1 = torch.randn(4, 6, requires_grad=True)
    target = torch.tensor([[1, 0, -1, 0, 0, 1]] * 4)
    r = recover_labels(s1, target)
    mask = (target != 0).float()
    released = (1 - mask) * torch.sigmoid(s1 * s1.max(dim=1, keepdim=True).values) + mask * (target > 0).float()
    close(r, released.detach(), tol=1e-6)
    assert not r.requires_grad


@pytest.mark.parametrize("tag,gammas", [("clsl", (2.0, 0.0, 0.0)), ("general", (4.0, 1.0, 0.05))])
def test_asymmetric_loss(tag, gammas):
    gn, gp, cl = gammas
    x = torch.as_tensor(Z["asl_x"])
    hard = torch.as_tensor(Z["asl_hard"])
    for kind, target, known in (("hard", (hard > 0).float(), hard != -1), ("soft", torch.as_tensor(Z["asl_soft"]), None)):
        xx = x.clone().requires_grad_(True)
        l = clsl_asl(xx, target, known, gamma_neg=gn, gamma_pos=gp, clip=cl)
        l.backward()
        close(l, Z[f"asl_{tag}_{kind}"]); close(xx.grad, Z[f"asl_{tag}_{kind}_grad"])
