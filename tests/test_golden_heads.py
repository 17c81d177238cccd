"""Golden tests: mlrpl's SARL modules, losses, pseudo labels and official-checkpoint loading equal the
official HCP-MLR-PL code on the inputs and outputs stored in tests/golden (made by make_golden_heads.py)."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

GOLDEN = Path(__file__).parent / "golden"
sys.path.insert(0, str(GOLDEN))
from weights import fill_state_dict, shapes_from_json  # noqa: E402

from mlrpl.compat import convert_official, from_official
from mlrpl.cst import FeatureQueue
from mlrpl.ist import intra_scores, soft_pseudo_label, sst_intra_target, sst_margin, pseudo_positive
from mlrpl.losses import asymmetric_loss, cooccurrence_loss, instance_contrastive_loss, partial_bce, prototype_contrastive_loss
from mlrpl.cst import masked_prototype_similarity
from mlrpl.sarl import ElementWiseLinear, GatedGNN, SemanticDecoupling

T = lambda a: torch.as_tensor(np.asarray(a))


def _z(name):
    return np.load(GOLDEN / f"{name}.npz")


def _weights(z, prefix, fixed=None):
    return fill_state_dict(shapes_from_json(z[f"{prefix}_shapes"]), int(z[f"{prefix}_seed"]), fixed, scale=float(z[f"{prefix}_scale"]))


def close(a, b, tol=1e-5):
    np.testing.assert_allclose(np.asarray(a.detach() if torch.is_tensor(a) else a, np.float64), np.asarray(b, np.float64), rtol=tol, atol=tol)


# ---- modules
def test_semantic_decoupling():
    z = _z("sarl_modules")
    c, d, e, i = (int(v) for v in z["sd_dims"])
    m = SemanticDecoupling(c, d, e, i)
    m.load_state_dict(_weights(z, "sd"))
    f, attn = m(T(z["sd_fmap"]), T(z["sd_words"]))
    close(f, z["sd_feature"])
    close(attn.permute(0, 2, 3, 1), z["sd_coef"])  # official: (B, H, W, C)


def test_gated_gnn_with_an_empty_class():
    z = _z("sarl_modules")
    dim, steps = (int(v) for v in z["gnn_dims"])
    w = {f"GraphNeuralNetwork.{k}": v for k, v in _weights(z, "gnn").items()}
    g = GatedGNN(dim, steps)
    g.load_state_dict({k[len("head.gnn."):]: v for k, v in convert_official(w).items()})
    close(g(T(z["gnn_nodes"]), T(z["gnn_adj"]).float()), z["gnn_out"])


def test_element_wise_classifier():
    z = _z("sarl_modules")
    m = ElementWiseLinear(*(int(v) for v in z["ew_dims"]))
    m.load_state_dict(_weights(z, "ew"))
    close(m(T(z["ew_input"])), z["ew_out"])


# ---- whole official models
@pytest.mark.parametrize("method", ["sst", "hst"])
def test_from_official_gives_the_official_logits(method):
    z = _z("sst_hst_model")
    arrays = dict(adjacency=z["adjacency"], adjacency_T=z["adjacency"].T, word_features=z["word_features"])
    fixed = {k: arrays[v] for k, v in json.loads(str(z["fixed"])).items()}
    sd = _weights(z, method, fixed)
    model = from_official(method, {"state_dict": sd, "epoch": 3}, z["adjacency"], z["word_features"])
    with torch.no_grad():
        logits = model(T(z["images"]))
        out = model.method(T(z["images"]))
    close(logits, z[f"{method}_logits"], 1e-4)
    close(out["cooc"], z[f"{method}_cooc"], 1e-4)
    close(out["features"], z[f"{method}_feature"], 1e-4)


def test_official_training_mode_forward():
    "Official train mode: frozen trunk in eval, layer4 and changeChannel BN on batch statistics."
    z = _z("sst_hst_model")
    arrays = dict(adjacency=z["adjacency"], adjacency_T=z["adjacency"].T, word_features=z["word_features"])
    fixed = {k: arrays[v] for k, v in json.loads(str(z["fixed"])).items()}
    model = from_official("sst", _weights(z, "sst", fixed), z["adjacency"], z["word_features"]).method.train()
    with torch.no_grad(): out = model(T(z["images"]))
    close(out["logits"], z["sst_train_logits"], 1e-4)
    close(out["cooc"], z["sst_train_cooc"], 1e-4)


# ---- losses
def _grad(fn, x, *args, **kw):
    x = T(x).float().requires_grad_()
    out = fn(x, *args, **kw)
    out.backward()
    return out, x.grad


def test_partial_bce():
    z = _z("losses")
    out, g = _grad(partial_bce, z["bce_input"], T(z["bce_target"]))
    close(out, z["bce_out"]); close(g, z["bce_grad"])
    out, g = _grad(partial_bce, z["bce_input"], torch.zeros(6, 5))
    close(out, z["bce_unknown_out"]); close(g, z["bce_unknown_grad"])
    out, g = _grad(partial_bce, z["bce_input"], T(z["bce_soft_target"]))
    close(out, z["bce_soft_out"]); close(g, z["bce_soft_grad"])
    out, g = _grad(partial_bce, z["bce_input"], T(z["bce_soft_target"]), margin=float(z["bce_soft_margin"]))
    close(out, z["bce_soft_margin_out"]); close(g, z["bce_soft_margin_grad"])
    out, g = _grad(partial_bce, z["bce_dtl_input"], T(z["bce_target"]))
    close(out, z["bce_dtl_out"]); close(g, z["bce_dtl_grad"])


def test_asymmetric_and_cooccurrence_losses():
    z = _z("losses")
    out, g = _grad(asymmetric_loss, z["bce_input"], T(z["bce_target"]), gamma_neg=2, gamma_pos=1, clip=0.05)
    close(out, z["asl_mean"]); close(g, z["asl_mean_grad"])
    out, g = _grad(cooccurrence_loss, z["iasl_input"], T(z["iasl_target"]))
    close(out, z["iasl_out"]); close(g, z["iasl_grad"])


def test_prototype_contrastive_loss_both_signs():
    z = _z("losses")
    p, t = T(z["pcl_prototype"]).float(), T(z["pcl_target"])
    out, g = _grad(prototype_contrastive_loss, z["pcl_input"], t, p, official_sign=True)
    close(out, z["pcl_out"]); close(g, z["pcl_grad"])
    ours, g2 = _grad(prototype_contrastive_loss, z["pcl_input"], t, p)
    close(ours, 2 - z["pcl_out"]); close(g2, -z["pcl_grad"])  # the intended sign mirrors the official one


@pytest.mark.parametrize("case", ["", "_nopp"])
def test_instance_contrastive_loss_bit_for_bit(case):
    z = _z("losses")
    x = T(z["icl_input"]).float()
    m, n = torch.triu_indices(6, 6, 1)
    close(F.cosine_similarity(x[m], x[n], dim=2, eps=1e-9), z["icl_distance"])
    torch.manual_seed(int(z[f"icl{case}_seed"]))  # the official draws from the global generator
    out, g = _grad(instance_contrastive_loss, z["icl_input"], T(z[f"icl{case}_target"]))
    close(out, z[f"icl{case}_out"]); close(g, z[f"icl{case}_grad"])


def test_instance_contrastive_loss_without_known_pairs_is_zero_not_nan():
    z = _z("losses")
    assert np.isnan(z["icl_none_out"])  # the official value
    out, g = _grad(instance_contrastive_loss, z["icl_input"], T(z["icl_none_target"]))
    assert out.item() == 0 and torch.all(g == 0)


# ---- pseudo labels
def test_sst_intra_pseudo_labels():
    z = _z("pseudo_labels")
    for m, want in zip(z["intra_sst_margins"], z["intra_sst_out"]):
        got = sst_intra_target(T(z["intra_cooc"]).float(), T(z["intra_target"]), float(m))
        np.testing.assert_array_equal(got.numpy(), want)


def test_hst_intra_soft_labels_and_dtl():
    z = _z("pseudo_labels")
    cooc = T(z["intra_cooc"]).float().requires_grad_()
    theta = torch.tensor(float(z["intra_hst_margin"]), requires_grad=True)
    target = T(z["intra_target"])
    q = soft_pseudo_label(intra_scores(cooc, target), theta)
    close(q, z["intra_hst_q"])
    np.testing.assert_array_equal(pseudo_positive(target, q.detach() > 0).numpy(), z["intra_hst_target"])
    dtl = 0.1*partial_bce(q, target)
    dtl.backward()
    close(dtl, z["intra_hst_dtl"]); close(theta.grad, z["intra_hst_dtl_grad_margin"]); close(cooc.grad, z["intra_hst_dtl_grad_cooc"])


def test_sst_inter_pseudo_labels_with_a_partly_filled_queue():
    z = _z("pseudo_labels")
    queue = T(z["inter_queue"]).float()
    q = FeatureQueue(queue.shape[0], queue.shape[2], queue.shape[1], official_zero_fill=True)
    q.queue.copy_(queue); q.filled.copy_((queue.abs().sum(-1) > 0).sum(1))
    f, target = T(z["inter_feature"]).float(), T(z["inter_target"])
    for m, want in zip(z["inter_sst_margins"], z["inter_sst_out"]):
        got = pseudo_positive(target, q.similarity(f) >= float(m))
        np.testing.assert_array_equal(got.numpy(), want)


def test_hst_inter_soft_labels_and_dtl():
    z = _z("pseudo_labels")
    f = T(z["inter_feature"]).float().requires_grad_()
    theta = torch.tensor(float(z["inter_hst_margin"]), requires_grad=True)
    target = T(z["inter_target"])
    q = soft_pseudo_label(masked_prototype_similarity(f, T(z["inter_prototype"]).float()), theta)
    close(q, z["inter_hst_q"])
    np.testing.assert_array_equal(pseudo_positive(target, q.detach() > 0).numpy(), z["inter_hst_target"])
    dtl = 0.1*partial_bce(q, target)
    dtl.backward()
    close(dtl, z["inter_hst_dtl"]); close(theta.grad, z["inter_hst_dtl_grad_margin"]); close(f.grad, z["inter_hst_dtl_grad_feature"])


def test_queue_updates_match_official():
    z = _z("pseudo_labels")
    feats, targets, states = z["queue_features"], z["queue_targets"], z["queue_states"]
    q = FeatureQueue(feats.shape[2], feats.shape[3], int(z["queue_size"]))
    for f, t, want in zip(feats, targets, states):
        q.update(T(f).float(), T(t))
        close(q.queue, want, 0)


def test_sst_margin_schedule():
    z = _z("pseudo_labels")
    got = [sst_margin(e, int(z["sst_generate_label_epoch"])) for e in range(20)]
    assert got == z["sst_margin_schedule"].tolist()
