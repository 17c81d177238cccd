"""Golden tests for representation blending: mlrpl's ILRB, PLRB, SARB, IPRB/PPRB and quadrant prototypes equal
the official SARB/DSRB code on the inputs and outputs stored in tests/golden (made by make_golden_blend.py).
Both sides run in float64 (the random draws in float32, as both draw them); the tolerances (SMALL, MODEL) are
derived in tests/golden/compare.py."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

GOLDEN = Path(__file__).parent / "golden"
sys.path.insert(0, str(GOLDEN))
from compare import MODEL, SMALL, as64, close  # noqa: E402
from weights import fill_state_dict, shapes_from_json  # noqa: E402

from mlrpl.compat import from_official
from mlrpl.dsrb import QuadrantPrototypes, quadrant_blend, quadrant_of_peak
from mlrpl.ilrb import instance_blend
from mlrpl.losses import partial_bce
from mlrpl.plrb import prototype_blend

T = lambda a: torch.as_tensor(np.asarray(a))
S = np.load(GOLDEN / "sarb.npz")
D = np.load(GOLDEN / "dsrb.npz")


def _scalar(v): return as64(v).requires_grad_()  # α, β: float32 values, in float64

# blends: two-term mixes, sums over <= 49 map locations or <= 101 maps: SMALL


def test_ilrb():
    alpha = _scalar(S["alpha"])
    fm, tm, _ = instance_blend(as64(S["feature"]), T(S["target"]), alpha)
    close(fm, S["ilrb_feature"], SMALL); close(tm, S["ilrb_target"], SMALL); close(tm, S["label_mixed"], SMALL)
    g_f, = torch.autograd.grad(fm.sum(), alpha, retain_graph=True); g_t, = torch.autograd.grad(tm.sum(), alpha)
    close(g_f, S["ilrb_feature_grad_alpha"], SMALL); close(g_t, S["ilrb_target_grad_alpha"], SMALL)


def test_plrb_official_draws_and_quirk():
    beta = _scalar(S["beta"])
    torch.manual_seed(int(S["seed"]))  # the official draws from the global generator: randint(K), then rand(B, C)
    fm, tm, blended = prototype_blend(as64(S["feature"]), T(S["target"]), as64(S["prototype"]), beta, official_quirk=True)
    np.testing.assert_array_equal(blended.numpy(), S["plrb_mask"] > 0)
    close(fm, S["plrb_feature"], SMALL); close(tm, S["plrb_target"], SMALL)
    g_f, = torch.autograd.grad(fm.sum(), beta, retain_graph=True); g_t, = torch.autograd.grad(tm.sum(), beta)
    close(g_f, S["plrb_feature_grad_beta"], SMALL); close(g_t, S["plrb_target_grad_beta"], SMALL)


def test_plrb_default_leaves_images_without_unknown_labels_alone():
    row = int(S["plrb_no_unknown_row"])
    torch.manual_seed(int(S["seed"]))
    fm, tm, blended = prototype_blend(as64(S["feature"]), T(S["target"]), as64(S["prototype"]), _scalar(S["beta"]))
    assert not blended[row].any() and torch.equal(tm[row], as64(S["target"])[row])
    others = np.arange(len(tm)) != row
    close(fm[others], S["plrb_feature"][others], SMALL); close(tm[others], S["plrb_target"][others], SMALL)


def _sarb_state():
    fixed_src = dict(adjacency=S["model_adjacency"], adjacency_T=S["model_adjacency"].T, word_features=S["model_word_features"])
    fixed = {k: fixed_src[v] for k, v in json.loads(str(S["model_fixed"])).items()}
    fixed.update({k: np.float32(v) for k, v in json.loads(str(S["model_kept"])).items()})
    return fill_state_dict(shapes_from_json(S["model_shapes"]), int(S["model_seed"]), fixed, scale=float(S["model_scale"]))


def test_sarb_checkpoint_eval_logits():
    m = from_official("sarb", _sarb_state(), S["model_adjacency"], S["model_word_features"]).double()
    with torch.no_grad(): close(m(as64(S["model_images"])), S["model_eval_logits"], MODEL)  # ResNet-101 and heads: MODEL


@pytest.mark.parametrize("case", ["train", "clamp"])
def test_sarb_training_step_blending_losses(case):
    sarb = from_official("sarb", _sarb_state(), S["model_adjacency"], S["model_word_features"]).method.train().double()
    a, b = S[f"model_{case}_alpha_beta_in"]
    with torch.no_grad(): sarb.alpha.fill_(float(a)); sarb.beta.fill_(float(b))
    target = T(S["model_target"])
    out = sarb(as64(S["model_images"]))
    # ResNet-101 with layer4's BatchNorm on batch statistics, then the heads: MODEL, here and for what follows
    close(out["logits"], S[f"model_{case}_result"], MODEL); close(out["features"], S[f"model_{case}_semantic_feature"], MODEL)
    with torch.no_grad(): sarb.alpha.clamp_(0, 1); sarb.beta.clamp_(0, 1)
    np.testing.assert_array_equal(torch.stack([sarb.alpha, sarb.beta]).detach().numpy(), S[f"model_{case}_alpha_beta_after"])
    f = out["features"]
    torch.manual_seed(int(S[f"model_{case}_seed"]))
    f1, t1, _ = instance_blend(f, target, sarb.alpha)  # draws nothing
    f2, t2, _ = prototype_blend(f, target, as64(S["model_prototype"]), sarb.beta, official_quirk=True)
    l3, l4 = partial_bce(sarb.head.classify(f1), t1), partial_bce(sarb.head.classify(f2), t2)
    close(t1, S[f"model_{case}_mixed_target_1"], SMALL); close(t2, S[f"model_{case}_mixed_target_2"], SMALL)  # from α, β and the labels
    close(l3, S[f"model_{case}_loss3"], MODEL); close(l4, S[f"model_{case}_loss4"], MODEL)
    ga, = torch.autograd.grad(l3, sarb.alpha, retain_graph=True); gb, = torch.autograd.grad(l4, sarb.beta)
    close(ga, S[f"model_{case}_loss3_grad_alpha"], MODEL); close(gb, S[f"model_{case}_loss4_grad_beta"], MODEL)


# ---- DSRB
def test_iprb_is_ilrb_on_summed_maps():
    alpha = _scalar(D["inst_alpha"])
    fm, tm, _ = instance_blend(as64(D["inst_F"]).sum((1, 2)), T(D["target"]), alpha)  # official: blend, then sum
    close(fm, D["inst_feature"], SMALL); close(tm, D["inst_target"], SMALL)
    g_f, = torch.autograd.grad(fm.sum(), alpha, retain_graph=True); g_t, = torch.autograd.grad(tm.sum(), alpha)
    close(g_f, D["inst_feature_grad_alpha"], SMALL); close(g_t, D["inst_target_grad_alpha"], SMALL)


@pytest.mark.parametrize("h,k", [(4, 1), (4, 2), (7, 1), (7, 2)])
def test_pprb_quadrants_draws_and_blend(h, k):
    p = f"proto_h{h}_"
    F = as64(D[p + "F"])  # (B, H, W, C, D) official weighted maps
    q = quadrant_of_peak(F.sum(-1).permute(0, 3, 1, 2))
    np.testing.assert_array_equal(q.numpy(), D[p + "peak_quadrant"])
    beta = _scalar(D["proto_beta"])
    torch.manual_seed(int(D[f"{p}top{k}_seed"]))  # official: randint(1, 4, (B, C)), then rand(B, C)
    fm, tm, blended = quadrant_blend(F.sum((1, 2)), T(D["target"]), q, as64(D[p + "prototype_featuremap"]).sum((2, 3)),
                                     beta, top_k=k, official_quirk=True)
    ok = ~D[f"{p}top{k}_tie_rows"].astype(bool)  # rows where topk broke ties among zeros are implementation-defined
    np.testing.assert_array_equal(blended.numpy()[ok], D[f"{p}top{k}_mask"][ok] > 0)
    close(fm[ok], D[f"{p}top{k}_feature"][ok], SMALL); close(tm[ok], D[f"{p}top{k}_target"][ok], SMALL)


def _prototypes(fmaps, targets, **kw):
    c, d, h = fmaps.shape[4], fmaps.shape[5], fmaps.shape[2]
    qp = QuadrantPrototypes(c, d, h, **kw).double()
    for F, t in zip(as64(fmaps), T(targets)):
        q = quadrant_of_peak(F.sum(-1).permute(0, 3, 1, 2))
        qp.add(t, q, lambda b, cc: F[b, :, :, cc])
    qp.finish()
    return qp


def test_quadrant_prototypes_official_mean_and_cap():
    qp = _prototypes(D["cp_fmaps"], D["cp_targets"], official_zero_map=True)
    np.testing.assert_array_equal(qp.counts.numpy(), D["cp_counts"])
    close(qp.maps, D["cp_prototype_featuremap"], SMALL)
    cap = _prototypes(D["cap_fmaps"], D["cap_targets"], official_zero_map=True, max_maps=int(D["cap_limit"]))
    np.testing.assert_array_equal(cap.counts.numpy(), D["cap_counts"])
    close(cap.maps, D["cap_prototype_featuremap"], SMALL)


def test_quadrant_prototypes_default_mean_and_empty_class():
    qp = _prototypes(D["cp_fmaps"], D["cp_targets"])
    n = qp.counts.numpy()[..., None, None, None]
    filled = np.broadcast_to(n > 0, qp.maps.shape)
    close(qp.maps.numpy()[filled], (D["cp_prototype_featuremap"]*np.where(n > 0, (n + 1)/np.maximum(n, 1), 1))[filled], SMALL)  # undiluted
    fm = D["cp_fmaps"]
    empty = _prototypes(fm, D["empty_class_targets"])  # the official routine crashes here
    assert np.isfinite(empty.maps.numpy()).all() and not empty.has_class().all()
