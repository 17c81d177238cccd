"""Golden tests: mlrpl's CLSL (encoder, SRFL, SGFE, recovered labels, the collaborative loss, its ablation switches)
equals the released CLSL models on the inputs, weights and outputs stored in tests/golden/clsl_model.npz
(made by make_golden_clsl_model.py). Both sides run in float64 (tolerances SMALL, MODEL: tests/golden/compare.py),
but for two float32 steps of mlrpl that cannot run in float64, each handled where it enters:
- mlrpl/clsl_features.py, sine_positions: the positions are built in float32 (dtype=torch.float32), as the
  released PositionEmbeddingSine builds them; compared on their own, the encoder then gets the released ones;
- mlrpl/clsl.py, recover_labels: `s = refined_logits.float()` computes the recovered labels in float32; their
  distance to the float64 rule is bounded, and its effect on the loss and gradients is computed and removed."""
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
from compare import MODEL, SMALL, U32, U64, as64, close  # noqa: E402
from weights import fill_state_dict, shapes_from_json  # noqa: E402

from mlrpl.clsl import clsl_asl, recover_labels
from mlrpl.compat import official_state_dict
from mlrpl.clsl_features import sine_positions
from mlrpl.methods import METHODS, StepContext

Z = np.load(GOLDEN / "clsl_model.npz")
SWITCHES = {"sarlp": {}, "sarlpwoJLS": dict(use_recovery=False),
            "sarlpwoSRFL": dict(use_srfl=False, embedding_mlp=False, use_recovery=False),
            "sarlpwoSRFLaJLS": dict(use_srfl=False, use_recovery=False)}


# |recover_labels - the rule in float64| on unknown entries, with z = s·max s: rounding z (<= U32·|z|) moves
# σ(z) by <= σ'(z)·|z|·U32 <= 0.224 U32; float32 σ(z) = 1/(1 + exp(-z)) adds <= 4 U32·σ (exp within 1 ulp, then
# an add and a division): <= 4.23 U32, bounded by 5 U32. Known entries are exactly 0 or 1.
RECOVERED_ATOL = 5*U32


def recovered64(logits, target):
    "The released rule ŷ = σ(s1 · max s1) on unknown entries, the label on known ones, in float64."
    s = logits.detach()
    return torch.where(target != 0, (target > 0).to(s.dtype), torch.sigmoid(s*s.max(1, keepdim=True).values))


# Gradients that are 0 in exact arithmetic, both sides rounding noise: a softmax over classes ignores a constant
# added to every class (the attention's two biases; mlrpl folds them into one, b = w_t·b_h + b_t), BatchNorm
# removes one (SRFL's first bias). Each is compared with the bound on that noise, from the gradient δ reaching the
# tensor the bias enters: a float64 sum of n entries of δ lies within n·u·Σ|δ| of its exact value, 0.
ZERO_GRAD = ("attention2.hidden_linear.bias", "attention2.target_linear.bias", "ttd.0.bias")
WATCH = {"attention": ("sgfe.attention", "out"), "srfl": ("srfl.mlp.1", "in")}  # scores (B, C, P); BN input (B, I, C)


def watch_deltas(m):
    "{'attention' | 'srfl': δ}, filled by the next backward pass, for the WATCH layers that `m` has."
    seen = {}
    for k, (path, side) in WATCH.items():
        try: mod = m.get_submodule(path)
        except AttributeError: continue
        def hook(mod, inp, out, k=k, side=side):
            (out if side == "out" else inp[0]).register_hook(lambda g: seen.__setitem__(k, g))
        mod.register_forward_hook(hook)
    return seen


def noise_bounds(m, deltas) -> dict:
    "{released bias name: per-channel bound on the rounding noise of its exactly-zero gradient}."
    out = {}
    if "attention" in deltas:
        d = deltas["attention"].detach()  # (B, C, P): b's gradient is Σ δ; b_t's is that, b_h's that times w_t
        s = (d.numel() + 1)*U64*d.abs().sum()
        out["attention2.target_linear.bias"] = s.reshape(1).numpy()
        out["attention2.hidden_linear.bias"] = (s*m.sgfe.attention.target_linear.weight[0].detach().abs()).numpy()
    if "srfl" in deltas:
        d = deltas["srfl"].detach()  # (B, I, C): the bias's gradient sums over images and classes
        out["ttd.0.bias"] = ((d.shape[0]*d.shape[2] + 1)*U64*d.abs().sum((0, 2))).numpy()
    return out


def build(name):
    m = METHODS.get("clsl", backbone=nn.Identity(), num_classes=C, word_embeddings=Z["words"], img_dim=D, map_size=H,
                    num_heads=4, ffn_dim=2048, att_dim=1024, encoder_dropout=0.0, mlp_dropout=0.0, **SWITCHES[name])
    shapes = shapes_from_json(json.loads(str(Z["shapes"]))[name])
    missing, unexpected = m.load_state_dict(official_state_dict(fill_state_dict(shapes, SEED)), strict=False)
    assert (set(missing), unexpected) == ({"words"}, []), (missing, unexpected)
    m.double()
    m.encoder.pos = as64(Z["position_embedding"])  # the released float32 positions (test_sine_positions: ours)
    return m


def inputs():
    fmap = as64(Z["tokens"]).transpose(1, 2).reshape(B, D, H, H)  # the released model's tokens as a map
    known, labels = torch.as_tensor(Z["known"]), torch.as_tensor(Z["labels"])
    target = torch.where(known, torch.where(labels > 0, 1, -1), 0)  # mlrpl's {1, 0, -1}
    return fmap, target


def test_sine_positions():
    "mlrpl's sine positions (float32) equal the released ones (float32, stored) to float32 rounding."
    ours = sine_positions(H, H, D).double().numpy()  # (P, D)
    # Both build sin/cos(v/f) in float32: v = index/(H + 1e-6)·2π <= 2π (4 roundings), f = 10000^(2⌊k/2⌋/D)
    # (the exponent rounded, then pow within 1 ulp: relative error <= (ln 10000 + 2)·U32 = 11.3 U32), a division:
    # the argument is within 17 U32 relative, 17·2π < 107 U32 absolute, and sin/cos add <= 1 U32: <= 108 U32 per
    # side from the exact values, 216 U32 between the two, bounded by 256 U32 (1.5e-5).
    np.testing.assert_allclose(ours, Z["position_embedding"], rtol=0, atol=256*U32)


@pytest.mark.parametrize("name", list(SWITCHES))
def test_eval_outputs(name):
    m = build(name).eval()
    fmap, _ = inputs()
    with torch.no_grad(): out = m(fmap)
    # encoder, SRFL, SGFE: ~12 layers, sums of <= 2048 terms: MODEL
    close(torch.sigmoid(out["logits"]), Z[f"{name}_eval_prob"], MODEL)
    close(out["pixel_logits"].transpose(1, 2), Z[f"{name}_eval_pixel"], MODEL)  # released 'alpha': (B, C, P)


@pytest.mark.parametrize("name", list(SWITCHES))
def test_training_loss_and_gradients(name):
    m = build(name).train()
    deltas = watch_deltas(m)
    fmap, target = inputs()
    out = m(fmap)
    loss, logs, _ = m.loss(out, target, StepContext(epoch=0))
    glob = logs.get("loss_global")
    if m.global_head is not None:
        # m.loss took the global branch's targets from recover_labels, in float32 (module docstring); the released
        # model, run in float64, from the rule in float64. Their distance is bounded; the loss term's shift it
        # causes, w·[ASL(s0, ŷ32) - ASL(s0, ŷ64)], is computed here in float64 and removed from the loss (and so
        # from the gradients): what remains is the released loss, compared at MODEL.
        y32, y64 = recover_labels(out["logits"], target), recovered64(out["logits"], target)
        assert (y32.double() - y64).abs().max() <= RECOVERED_ATOL
        c = m.cfg
        asl = dict(gamma_neg=c.gamma_neg, gamma_pos=c.gamma_pos, clip=c.clip, scale=c.loss_scale)
        shift = clsl_asl(out["global_logits"], y32, **asl) - clsl_asl(out["global_logits"], y64, **asl)
        torch.testing.assert_close(clsl_asl(out["global_logits"], y32, **asl).detach(), glob, rtol=0, atol=0)  # what m.loss took
        loss, glob = loss - c.recovery_weight*shift, glob - shift.detach()
    loss.backward()
    ce, sam, fc = Z[f"{name}_loss"]
    close(loss, ce, MODEL); close(logs["loss_refined"], fc, MODEL)
    if glob is not None: close(glob, sam, MODEL)
    close(torch.sigmoid(out["logits"]), Z[f"{name}_train_prob"], MODEL)
    params, bounds = dict(m.named_parameters()), noise_bounds(m, deltas)
    keys = [k[len(f"{name}_grad/"):] for k in Z.files if k.startswith(f"{name}_grad/")]
    assert keys
    for k in keys:
        (ours,) = official_state_dict({k: torch.zeros(1)})  # the same weight's name here
        g = params[ours].grad.reshape(-1)
        kept = sample(g.numel())  # the entries the fixture keeps
        g, want = g[kept].numpy(), Z[f"{name}_grad/{k}"]
        if k in ZERO_GRAD:
            bound = bounds[k][kept] if bounds[k].size > 1 else bounds[k]
            assert (np.abs(g) <= bound).all() and (np.abs(want) <= bound).all(), (k, np.abs(g).max(), bound.min())
        else: close(g, want, MODEL, what=k)
    assert set(bounds) == set(keys) & set(ZERO_GRAD)  # every exactly-zero gradient of this model is checked so


def test_recovered_labels_rule():
    "The released rule: known entries keep their labels, unknown ones get σ(s1 · max s1), without gradient."
    torch.manual_seed(0)
    s1 = torch.randn(4, 6, requires_grad=True)
    target = torch.tensor([[1, 0, -1, 0, 0, 1]] * 4)
    r = recover_labels(s1, target)
    s = s1.detach().double()
    mask = (target != 0).double()
    released = (1 - mask) * torch.sigmoid(s * s.max(dim=1, keepdim=True).values) + mask * (target > 0).double()
    assert r.dtype == torch.float32  # mlrpl/clsl.py, recover_labels: computed in float32 (s = refined_logits.float())
    np.testing.assert_allclose(r.double().numpy(), released.numpy(), rtol=0, atol=RECOVERED_ATOL)  # derived above
    assert not r.requires_grad


@pytest.mark.parametrize("tag,gammas", [("clsl", (2.0, 0.0, 0.0)), ("general", (4.0, 1.0, 0.05))])
def test_asymmetric_loss(tag, gammas):
    gn, gp, cl = gammas
    x = as64(Z["asl_x"])
    hard = as64(Z["asl_hard"])
    for kind, target, known in (("hard", (hard > 0).double(), hard != -1), ("soft", as64(Z["asl_soft"]), None)):
        xx = x.clone().requires_grad_(True)
        l = clsl_asl(xx, target, known, gamma_neg=gn, gamma_pos=gp, clip=cl)
        l.backward()
        close(l, Z[f"asl_{tag}_{kind}"], SMALL); close(xx.grad, Z[f"asl_{tag}_{kind}_grad"], SMALL)  # sums of 24 terms
