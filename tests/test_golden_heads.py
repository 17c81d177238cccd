"""Golden tests: mlrpl's SARL modules, losses, pseudo labels and official-checkpoint loading equal the
official HCP-MLR-PL code on the inputs and outputs stored in tests/golden (made by make_golden_heads.py).
Both sides run in float64; the tolerances (SMALL, MODEL) are derived in tests/golden/compare.py."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

GOLDEN = Path(__file__).parent / "golden"
sys.path.insert(0, str(GOLDEN))
from compare import MODEL, SMALL, as64, close  # noqa: E402
from weights import fill_state_dict, shapes_from_json  # noqa: E402

from mlrpl.compat import convert_official, from_official
from mlrpl.cst import FeatureQueue
from mlrpl.ist import intra_scores, soft_pseudo_label, sst_intra_target, sst_margin, pseudo_positive
from mlrpl.losses import asymmetric_loss, cooccurrence_loss, instance_contrastive_loss, partial_bce, prototype_contrastive_loss
from mlrpl.losses import prototype_similarity
from mlrpl.sarl import ElementWiseLinear, GatedGNN, SemanticDecoupling

T = lambda a: torch.as_tensor(np.asarray(a))


def _z(name):
    return np.load(GOLDEN / f"{name}.npz")


def _weights(z, prefix, fixed=None):
    return fill_state_dict(shapes_from_json(z[f"{prefix}_shapes"]), int(z[f"{prefix}_seed"]), fixed, scale=float(z[f"{prefix}_scale"]))


# ---- modules
def test_semantic_decoupling():
    z = _z("sarl_modules")
    c, d, e, i = (int(v) for v in z["sd_dims"])
    m = SemanticDecoupling(c, d, e, i)
    m.load_state_dict(_weights(z, "sd"))
    f, attn = m.double()(as64(z["sd_fmap"]), as64(z["sd_words"]))
    # ~5 layers (projections, tanh, attention, softmax over 9 locations), sums of <= 32 terms: SMALL
    close(f, z["sd_feature"], SMALL)
    close(attn.permute(0, 2, 3, 1), z["sd_coef"], SMALL)  # official: (B, H, W, C)


def test_gated_gnn_with_an_empty_class():
    z = _z("sarl_modules")
    dim, steps = (int(v) for v in z["gnn_dims"])
    w = {f"GraphNeuralNetwork.{k}": v for k, v in _weights(z, "gnn").items()}
    g = GatedGNN(dim, steps)
    g.load_state_dict({k[len("head.gnn."):]: v for k, v in convert_official(w).items()})
    # 3 steps of ~3 layers, sums of <= 64 terms: SMALL
    close(g.double()(as64(z["gnn_nodes"]), as64(z["gnn_adj"])), z["gnn_out"], SMALL)


def test_element_wise_classifier():
    z = _z("sarl_modules")
    m = ElementWiseLinear(*(int(v) for v in z["ew_dims"]))
    m.load_state_dict(_weights(z, "ew"))
    close(m.double()(as64(z["ew_input"])), z["ew_out"], SMALL)  # one 32-term dot product per entry


# ---- whole official models
@pytest.mark.parametrize("method", ["sst", "hst"])
def test_from_official_gives_the_official_logits(method):
    z = _z("sst_hst_model")
    arrays = dict(adjacency=z["adjacency"], adjacency_T=z["adjacency"].T, word_features=z["word_features"])
    fixed = {k: arrays[v] for k, v in json.loads(str(z["fixed"])).items()}
    sd = _weights(z, method, fixed)
    model = from_official(method, {"state_dict": sd, "epoch": 3}, z["adjacency"], z["word_features"]).double()
    with torch.no_grad():
        logits = model(as64(z["images"]))
        out = model.method(as64(z["images"]))
    # ResNet-101 at 128 px, then decoupling, GNN and classifier: ~104 layers, sums of <= 4608 terms: MODEL
    close(logits, z[f"{method}_logits"], MODEL)
    close(out["cooc"], z[f"{method}_cooc"], MODEL)
    close(out["features"], z[f"{method}_feature"], MODEL)


def test_official_training_mode_forward():
    "Official train mode: frozen trunk in eval, layer4 and changeChannel BN on batch statistics."
    z = _z("sst_hst_model")
    arrays = dict(adjacency=z["adjacency"], adjacency_T=z["adjacency"].T, word_features=z["word_features"])
    fixed = {k: arrays[v] for k, v in json.loads(str(z["fixed"])).items()}
    model = from_official("sst", _weights(z, "sst", fixed), z["adjacency"], z["word_features"]).method.train().double()
    with torch.no_grad(): out = model(as64(z["images"]))
    # as above, BatchNorm on batch statistics (sums over 2 × 4 × 4 entries): MODEL
    close(out["logits"], z["sst_train_logits"], MODEL)
    close(out["cooc"], z["sst_train_cooc"], MODEL)


# ---- losses
def _grad(fn, x, *args, **kw):
    x = as64(x).requires_grad_()
    out = fn(x, *args, **kw)
    out.backward()
    return out, x.grad


# the losses and their gradients: means of <= 30 elementwise terms (ICL: <= 45 pairs), a cosine over 8: SMALL
def test_partial_bce():
    z = _z("losses")
    out, g = _grad(partial_bce, z["bce_input"], T(z["bce_target"]))
    close(out, z["bce_out"], SMALL); close(g, z["bce_grad"], SMALL)
    out, g = _grad(partial_bce, z["bce_input"], torch.zeros(6, 5))
    close(out, z["bce_unknown_out"], SMALL); close(g, z["bce_unknown_grad"], SMALL)
    out, g = _grad(partial_bce, z["bce_input"], T(z["bce_soft_target"]))
    close(out, z["bce_soft_out"], SMALL); close(g, z["bce_soft_grad"], SMALL)
    out, g = _grad(partial_bce, z["bce_input"], T(z["bce_soft_target"]), margin=float(z["bce_soft_margin"]))
    close(out, z["bce_soft_margin_out"], SMALL); close(g, z["bce_soft_margin_grad"], SMALL)
    out, g = _grad(partial_bce, z["bce_dtl_input"], T(z["bce_target"]))
    close(out, z["bce_dtl_out"], SMALL); close(g, z["bce_dtl_grad"], SMALL)


def test_asymmetric_and_cooccurrence_losses():
    z = _z("losses")
    out, g = _grad(asymmetric_loss, z["bce_input"], T(z["bce_target"]), gamma_neg=2, gamma_pos=1, clip=0.05)
    close(out, z["asl_mean"], SMALL); close(g, z["asl_mean_grad"], SMALL)
    out, g = _grad(cooccurrence_loss, z["iasl_input"], T(z["iasl_target"]))
    close(out, z["iasl_out"], SMALL); close(g, z["iasl_grad"], SMALL)


def test_prototype_contrastive_loss_both_signs():
    z = _z("losses")
    p, t = as64(z["pcl_prototype"]), T(z["pcl_target"])
    out, g = _grad(prototype_contrastive_loss, z["pcl_input"], t, p, official_sign=True)
    close(out, z["pcl_out"], SMALL); close(g, z["pcl_grad"], SMALL)
    ours, g2 = _grad(prototype_contrastive_loss, z["pcl_input"], t, p)
    close(ours, 2 - z["pcl_out"], SMALL); close(g2, -z["pcl_grad"], SMALL)  # the intended sign mirrors the official one


def test_hst_trains_with_the_released_prototype_loss_over_its_masked_prototypes():
    """The path that trains: HST.loss's prototype term, on the golden inputs, with the golden prototypes padded by two
    slots its mask leaves out (a class with fewer known positives than K), is the released loss (official_sign) and
    its mirror (the intended sign), times proto_weight."""
    from torch import nn
    from mlrpl.methods import get
    from mlrpl.methods import StepContext
    z = _z("losses")
    feats, target, protos = as64(z["pcl_input"]), T(z["pcl_target"]), as64(z["pcl_prototype"])  # (6, 5, 8), (6, 5), (5, 3, 8)
    (C, K, D), B = protos.shape, feats.shape[0]
    torch.manual_seed(0)
    hst = get("hst", num_classes=C, adjacency=np.eye(C), word_embeddings=np.random.default_rng(0).normal(size=(C, 6)), img_dim=D,
                     inter_dim=6, out_dim=10, num_prototypes=K + 2, backbone=nn.Conv2d(3, D, 4, stride=4)).double()
    hst.prototypes.copy_(torch.cat([protos, torch.randn(C, 2, D, dtype=protos.dtype)], 1))
    hst.prototype_mask.copy_(torch.arange(K + 2) < K)
    out = {**hst(torch.randn(B, 3, 16, 16, dtype=torch.float64)), "features": feats}
    for official, want in ((True, float(z["pcl_out"])), (False, 2 - float(z["pcl_out"]))):
        hst.cfg.official_sign = official
        _, logs, _ = hst.loss(out, target, StepContext(epoch=hst.cfg.pseudo_start))
        close(logs["proto"], hst.cfg.proto_weight*want, SMALL)


@pytest.mark.parametrize("case", ["", "_nopp"])
def test_instance_contrastive_loss_bit_for_bit(case):
    z = _z("losses")
    x = as64(z["icl_input"])
    m, n = torch.triu_indices(6, 6, 1)
    close(F.cosine_similarity(x[m], x[n], dim=2, eps=1e-9), z["icl_distance"], SMALL)
    torch.manual_seed(int(z[f"icl{case}_seed"]))  # the official draws from the global generator
    out, g = _grad(instance_contrastive_loss, z["icl_input"], T(z[f"icl{case}_target"]))
    close(out, z[f"icl{case}_out"], SMALL); close(g, z[f"icl{case}_grad"], SMALL)


def test_instance_contrastive_loss_without_known_pairs_is_zero_not_nan():
    z = _z("losses")
    assert np.isnan(z["icl_none_out"])  # the official value
    out, g = _grad(instance_contrastive_loss, z["icl_input"], T(z["icl_none_target"]))
    assert out.item() == 0 and torch.all(g == 0)


# ---- pseudo labels
def test_sst_intra_pseudo_labels():
    z = _z("pseudo_labels")
    for m, want in zip(z["intra_sst_margins"], z["intra_sst_out"]):
        got = sst_intra_target(as64(z["intra_cooc"]), T(z["intra_target"]), float(m))
        np.testing.assert_array_equal(got.numpy(), want)  # 0/1 pseudo labels: exact


def test_hst_intra_soft_labels_and_dtl():
    z = _z("pseudo_labels")
    cooc = as64(z["intra_cooc"]).requires_grad_()
    theta = as64(z["intra_hst_margin"]).requires_grad_()
    target = T(z["intra_target"])
    q = soft_pseudo_label(intra_scores(cooc, target), theta)
    close(q, z["intra_hst_q"], SMALL)
    np.testing.assert_array_equal(pseudo_positive(target, q.detach() > 0).numpy(), z["intra_hst_target"])
    dtl = 0.1*partial_bce(q, target)
    dtl.backward()
    close(dtl, z["intra_hst_dtl"], SMALL); close(theta.grad, z["intra_hst_dtl_grad_margin"], SMALL); close(cooc.grad, z["intra_hst_dtl_grad_cooc"], SMALL)


def test_sst_inter_pseudo_labels_with_a_partly_filled_queue():
    z = _z("pseudo_labels")
    queue = as64(z["inter_queue"])
    q = FeatureQueue(queue.shape[0], queue.shape[2], queue.shape[1], official_zero_fill=True).double()
    q.queue.copy_(queue); q.filled.copy_((queue.abs().sum(-1) > 0).sum(1))
    f, target = as64(z["inter_feature"]), T(z["inter_target"])
    for m, want in zip(z["inter_sst_margins"], z["inter_sst_out"]):
        got = pseudo_positive(target, q.similarity(f) >= float(m))
        np.testing.assert_array_equal(got.numpy(), want)  # 0/1 pseudo labels: exact


def test_hst_inter_soft_labels_and_dtl():
    z = _z("pseudo_labels")
    f = as64(z["inter_feature"]).requires_grad_()
    theta = as64(z["inter_hst_margin"]).requires_grad_()
    target = T(z["inter_target"])
    q = soft_pseudo_label(prototype_similarity(f, as64(z["inter_prototype"])), theta)
    close(q, z["inter_hst_q"], SMALL)
    np.testing.assert_array_equal(pseudo_positive(target, q.detach() > 0).numpy(), z["inter_hst_target"])
    dtl = 0.1*partial_bce(q, target)
    dtl.backward()
    close(dtl, z["inter_hst_dtl"], SMALL); close(theta.grad, z["inter_hst_dtl_grad_margin"], SMALL); close(f.grad, z["inter_hst_dtl_grad_feature"], SMALL)


def test_queue_updates_match_official():
    z = _z("pseudo_labels")
    feats, targets, states = z["queue_features"], z["queue_targets"], z["queue_states"]
    q = FeatureQueue(feats.shape[2], feats.shape[3], int(z["queue_size"]))
    for f, t, want in zip(feats, targets, states):
        q.update(T(f).float(), T(t))
        np.testing.assert_array_equal(q.queue.numpy(), want)  # copies of float32 features, as the official queue: exact


def test_sst_margin_schedule():
    z = _z("pseudo_labels")
    got = [sst_margin(e, int(z["sst_generate_label_epoch"])) for e in range(20)]
    assert got == z["sst_margin_schedule"].tolist()
