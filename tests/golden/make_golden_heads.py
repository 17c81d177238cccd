"""Regenerate the golden fixtures of the SST/HST heads, losses and pseudo labels from the official HCP-MLR-PL code.

    python tests/golden/make_golden_heads.py --reference /path/to/HCP-MLR-PL [--out tests/golden]

Writes sarl_modules.npz, sst_hst_model.npz, losses.npz and pseudo_labels.npz (np.savez_compressed). The official
modules are imported from the checkout at run time (nothing of them is copied here) and run on the CPU: their
`.cuda()` calls and the NumPy aliases removed in NumPy 1.24 are patched in this process only. Weights are never
stored: each fixture holds a seed, a scale and the {name: shape} of a state dict as JSON, and
`tests/golden/weights.py:fill_state_dict` re-creates the identical tensors. Running it twice gives identical files.

Precision: inputs and weights hold float32 values; the official modules run in float64 (`.double()`, float64
inputs) and every output is stored in float64, so the fixtures do not carry the last bits of one CPU's float32
kernels. Where official code allocates with the default dtype (getIntraPseudoLabel), that call runs under
`official.float64_defaults`. Kept in float32: the random draws (as the official code and mlrpl draw them), the
feature queue (copies only) and the KMeans prototypes (sklearn on float32 features, not compared by the tests).
"""
import argparse, json, sys, types
from pathlib import Path

import numpy as np
import torch
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from weights import fill_state_dict, shapes_of, shapes_to_json  # noqa: E402
from official import adjacency, f32, float64_defaults, npy, out64, patch_for_cpu, t32, t64  # noqa: E402

FIXED = ("wordFeatures", "inMatrix", "outMatrix", "GraphNeuralNetwork.inMatrix", "GraphNeuralNetwork.outMatrix")
SOURCE = {"wordFeatures": "word_features", "inMatrix": "adjacency", "outMatrix": "adjacency_T",
          "GraphNeuralNetwork.inMatrix": "adjacency", "GraphNeuralNetwork.outMatrix": "adjacency_T"}


def load_reference(ref: Path):
    "Import the official modules, with `.cuda()` a no-op and np.float/np.int restored."
    patch_for_cpu(ref)
    import loss.HST as lh, loss.SST as ls, loss.SARB as lsarb
    import model.SST as ms, model.HST as mh
    from model.SemanticDecoupling import SemanticDecoupling
    from model.GraphNeuralNetwork import GatedGNN
    from model.Element_Wise_Layer import Element_Wise_Layer
    from model.backbone.resnet import resnet101
    return types.SimpleNamespace(lh=lh, ls=ls, lsarb=lsarb, SST=ms.SST, HST=mh.HST, SemanticDecoupling=SemanticDecoupling,
                                 GatedGNN=GatedGNN, Element_Wise_Layer=Element_Wise_Layer, resnet101=resnet101)


def fill(module, seed, scale, exclude=()):
    "Load fill_state_dict weights into `module` (the `exclude` entries keep their values); return their spec."
    sd = module.state_dict()
    shapes = shapes_of(sd, exclude)
    module.load_state_dict(fill_state_dict(shapes, seed, {k: sd[k] for k in exclude}, scale=scale), strict=True)
    return shapes_to_json(shapes)


# ---------------------------------------------------------------------------------------------------------------
def sarl_modules(R):
    out, rng = {}, np.random.default_rng(101)
    B, C, D, E, I, H = 2, 5, 32, 12, 16, 3
    # SemanticDecoupling
    sd = R.SemanticDecoupling(classNum=C, imgFeatureDim=D, wordFeatureDim=E, intermediaDim=I)
    out["sd_dims"] = np.array([C, D, E, I])
    out["sd_seed"], out["sd_scale"] = np.int64(11), np.float64(0.3)
    out["sd_shapes"] = fill(sd, 11, 0.3)
    sd.double()
    out["sd_fmap"] = fmap = f32(rng.standard_normal((B, D, H, H)))
    out["sd_words"] = words = f32(rng.standard_normal((C, E)))
    with torch.no_grad(): f, weighted, coef = sd(t64(fmap), t64(words))
    out["sd_feature"], out["sd_weighted_maps"], out["sd_coef"] = out64(f), out64(weighted), out64(coef)
    # GatedGNN, on a label graph in which class 3 has no positive (a zero row and column)
    labels = np.where(rng.random((12, C)) < 0.5, 1, -1); labels[:, 3] = -1; labels[0, [0, 1, 2, 4]] = 1
    A = adjacency(labels)
    assert (A[3] == 0).all() and np.isclose(np.diag(A)[[0, 1, 2, 4]], 1).all()
    gnn = R.GatedGNN(D, 3, nn.Parameter(t32(A), requires_grad=False), nn.Parameter(t32(A.T), requires_grad=False))
    out["gnn_dims"] = np.array([D, 3])
    out["gnn_seed"], out["gnn_scale"] = np.int64(12), np.float64(0.2)
    out["gnn_shapes"] = fill(gnn, 12, 0.2, exclude=("inMatrix", "outMatrix"))
    gnn.double()  # the adjacency keeps its float32 values (the official load_matrix rounds it to float32)
    out["gnn_labels"], out["gnn_adj"] = labels.astype(np.int8), f32(A)
    out["gnn_nodes"] = nodes = f32(rng.standard_normal((B, C, D)))
    with torch.no_grad(): out["gnn_out"] = out64(gnn(t64(nodes)))
    # Element_Wise_Layer
    ew = R.Element_Wise_Layer(C, D)
    out["ew_dims"] = np.array([C, D])
    out["ew_seed"], out["ew_scale"] = np.int64(13), np.float64(0.2)
    out["ew_shapes"] = fill(ew, 13, 0.2)
    ew.double()
    out["ew_input"] = x = f32(rng.standard_normal((B, C, D)))
    with torch.no_grad(): out["ew_out"] = out64(ew(t64(x)))
    return out


# ---------------------------------------------------------------------------------------------------------------
def check_torchvision_backbone(R, backbone, images, official_map):
    "Official resnet101 keys == torchvision resnet101 keys minus fc; same output with AvgPool2d(2, 2) after layer4."
    try:
        import torchvision
    except ImportError:
        return None
    tv = torchvision.models.resnet101().double()
    tv_keys = {k for k in tv.state_dict() if not k.startswith("fc.")}
    ours = backbone.state_dict()
    same = tv_keys == set(ours) and all(tv.state_dict()[k].shape == ours[k].shape for k in tv_keys)
    tv.fc = nn.Identity()
    tv.load_state_dict(ours, strict=False)
    tv.eval()
    with torch.no_grad():
        x = torch.as_tensor(images)
        for m in (tv.conv1, tv.bn1, tv.relu, tv.maxpool, tv.layer1, tv.layer2, tv.layer3, tv.layer4): x = m(x)
        x = nn.AvgPool2d(2, stride=2)(x)
    return bool(same and torch.equal(x, torch.as_tensor(official_map)))


def sst_hst_model(R):
    out, rng = {}, np.random.default_rng(202)
    B, C, S = 2, 4, 128
    labels = np.where(rng.random((10, C)) < 0.5, 1, -1); labels[0] = 1
    A = adjacency(labels)
    words = f32(rng.standard_normal((C, 300)))
    # two distinct images, on a 1/8 grid so that they compress (all values exact in float32)
    img = np.round(rng.standard_normal((B, 3, S, S))*8)/8
    img[1] = img[1]*0.5 + 0.5
    out["images"], out["labels"], out["adjacency"], out["word_features"] = f32(img), labels.astype(np.int8), f32(A), words
    out["dims"] = json.dumps(dict(imageFeatureDim=1024, intermediaDim=512, outputDim=1024, classNum=C,
                                  wordFeatureDim=300, timeStep=3))
    out["fixed"] = json.dumps(SOURCE)
    x = t64(out["images"])
    for name, cls, seed, kw in (("sst", R.SST, 31, {}),
                                ("hst", R.HST, 32, dict(intraMargin=1.0, isIntraMarginLearnable=True,
                                                         interMargin=1.0, isInterMarginLearnable=True))):
        torch.manual_seed(0)  # the constructor's random init is overwritten; seeded only to keep runs quiet
        m = cls(A, words, imageFeatureDim=1024, intermediaDim=512, outputDim=1024, classNum=C, wordFeatureDim=300,
                timeStep=3, **kw)
        sd = m.state_dict()
        assert all(k in sd for k in FIXED)
        out[f"{name}_seed"], out[f"{name}_scale"] = np.int64(seed), np.float64(0.033)
        out[f"{name}_shapes"] = fill(m, seed, 0.033, exclude=FIXED)
        out[f"{name}_num_entries"] = np.int64(len(sd))
        m.double()  # weights, adjacency and word features keep their float32 values
        m.eval()
        with torch.no_grad():
            result, cooc, feature = m(x)
            bmap = m.backbone(x)
        for k, v in (("logits", result), ("cooc", cooc), ("feature", feature)):
            a = out64(v); assert np.isfinite(a).all() and a.std() > 1e-3, (name, k); out[f"{name}_{k}"] = a
        if name == "sst":
            out["sst_backbone_map"] = out64(bmap)
            with torch.no_grad(): out["sst_fmap"] = out64(m.changeChannel(bmap))
            out["backbone_is_torchvision"] = np.bool_(check_torchvision_backbone(R, m.backbone, x, bmap))
            # the official training mode: BN of layer4 and changeChannel use batch statistics, the rest is frozen
            m.train(); m.backbone.eval(); m.backbone.layer4.train()
            with torch.no_grad(): r, c, f = m(x)
            out["sst_train_logits"], out["sst_train_cooc"], out["sst_train_feature"] = out64(r), out64(c), out64(f)
        else:
            with torch.no_grad(): assert torch.equal(m(x, onlyFeature=True), feature)
    return out


# ---------------------------------------------------------------------------------------------------------------
def grad_of(fn, *xs):
    "fn(*tensors) and the gradient of its sum w.r.t. each input, in float64 (zeros where the output is detached)."
    ts = [t64(x, grad=True) for x in xs]
    y = fn(*ts)
    if y.requires_grad: y.sum().backward()
    return out64(y), [out64(t.grad) if t.grad is not None else np.zeros(np.shape(x)) for x, t in zip(xs, ts)]


def icl_reference(distance, target, seed):
    "Re-derive InstanceContrastiveLoss(reduce=True, size_average=True) to prove the order of its random calls."
    B = target.shape[0]
    i, j = np.triu_indices(B, 1)  # the official getConcatIndex order
    ti, tj = target[i], target[j]
    pp, pn, nn_ = (ti == 1) & (tj == 1), ((ti == 1) & (tj == -1)) | ((ti == -1) & (tj == 1)), (ti == -1) & (tj == -1)
    d = torch.as_tensor(distance)
    l_pp, l_pn, l_nn = (1 - d)[torch.as_tensor(pp)], (1 + d)[torch.as_tensor(pn)], (1 + d)[torch.as_tensor(nn_)]
    k, perms = len(l_pp), {}
    torch.manual_seed(seed)
    if k:
        if len(l_nn):
            perms["nn"] = torch.randperm(len(l_nn))
            l_nn = torch.cat((l_nn[perms["nn"][:2*k]], torch.sort(l_nn, descending=True)[0][:k]))
        if len(l_pn):
            perms["pn"] = torch.randperm(len(l_pn))
            l_pn = torch.cat((l_pn[perms["pn"][:2*k]], torch.sort(l_pn, descending=True)[0][:k]))
    loss = torch.cat((l_pp, l_pn, l_nn))
    return loss.mean(), (int(pp.sum()), int(pn.sum()), int(nn_.sum())), perms


def losses(R):
    out, rng = {}, np.random.default_rng(303)
    lh, ls, lsarb = R.lh, R.ls, R.lsarb
    B, C = 6, 5
    # BCELoss (partial BCE) -------------------------------------------------------------------------------------
    x = f32(rng.standard_normal((B, C))*2)
    t = rng.choice([1., 0., -1.], size=(B, C), p=[.4, .3, .3]); t[2] = 0; t[0, :2] = (1, -1)
    out["bce_input"], out["bce_target"] = x, f32(t)
    red, unred = lh.BCELoss(margin=0.0, reduce=True, size_average=True), lh.BCELoss(margin=0.0)
    out["bce_out"], (out["bce_grad"],) = grad_of(lambda a: red(a, t64(t)), x)
    with torch.no_grad(): out["bce_elementwise"] = out64(unred(t64(x), t64(t)))
    out["bce_sum"] = out64(lh.BCELoss(reduce=True, size_average=False)(t64(x), t64(t)))
    # the whole batch without a known label: the official loss falls back to the mean of an all-zero loss, 0
    z = np.zeros((B, C), np.float32)
    out["bce_unknown_out"], (out["bce_unknown_grad"],) = grad_of(lambda a: red(a, t64(z)), x)
    assert out["bce_unknown_out"] == 0 and not out["bce_unknown_grad"].any()
    # soft targets, as SARB's blended labels (1-α) or any soft positive: BCE-with-logits against the soft value
    ts = f32(rng.choice([1., 0., -1., .3, .7, -.4], size=(B, C)))
    out["bce_soft_target"] = ts
    out["bce_soft_out"], (out["bce_soft_grad"],) = grad_of(lambda a: red(a, t64(ts)), x)
    out["bce_soft_margin"] = np.float64(0.5)  # entries with |target| <= margin are ignored
    out["bce_soft_margin_out"], (out["bce_soft_margin_grad"],) = grad_of(
        lambda a: lh.BCELoss(margin=0.5, reduce=True, size_average=True)(a, t64(ts)), x)
    # DTL: BCELoss(q, target) where the *input* is a soft pseudo label q in [0, 1] (clamped, hence exact zeros)
    q = np.clip(rng.random((B, C))*1.4 - 0.4, 0, 1)
    out["bce_dtl_input"] = f32(q)
    out["bce_dtl_out"], (out["bce_dtl_grad"],) = grad_of(lambda a: red(a, t64(t)), q)
    for L in (ls.BCELoss, lsarb.BCELoss):  # loss/SST.py and loss/SARB.py: the same function
        assert torch.equal(L(reduce=True, size_average=True)(t32(x), t32(ts)), red(t32(x), t32(ts)))
    # AsymmetricLoss (elementwise by default: reduce=None) ---------------------------------------------------------
    asl = lh.AsymmetricLoss(gamma_neg=2, gamma_pos=1, clip=0.05)
    with torch.no_grad(): out["asl_elementwise"] = out64(asl(t64(x), t64(t)))
    out["asl_mean"], (out["asl_mean_grad"],) = grad_of(
        lambda a: lh.AsymmetricLoss(gamma_neg=2, gamma_pos=1, clip=0.05, reduce=True, size_average=True)(a, t64(t)), x)
    assert torch.equal(ls.AsymmetricLoss(gamma_neg=2, gamma_pos=1, clip=0.05)(t32(x), t32(t)), asl(t32(x), t32(t)))
    # intraAsymmetricLoss: (B, C(C-1)/2) pair logits, pair target 1 iff both classes are known positives -------------
    P = C*(C-1)//2
    xc = f32(rng.standard_normal((B, P))*3)
    out["iasl_input"], out["iasl_target"] = xc, f32(t)
    iasl = lh.intraAsymmetricLoss(C, gamma_neg=2, gamma_pos=1, reduce=True, size_average=True)
    out["iasl_out"], (out["iasl_grad"],) = grad_of(lambda a: iasl(a, t64(t)), xc)
    with torch.no_grad(): out["iasl_elementwise"] = out64(lh.intraAsymmetricLoss(C, gamma_neg=2, gamma_pos=1)(t64(xc), t64(t)))
    assert torch.equal(ls.intraAsymmetricLoss(C, gamma_neg=2, gamma_pos=1, reduce=True, size_average=True)(t32(xc), t32(t)),
                       iasl(t32(xc), t32(t)))
    # PrototypeContrastiveLoss: 1 + y * mean_k cos(f_bc, P_ck), averaged over all B*C entries (sign as in the code)
    D, K = 8, 3
    f = f32(rng.standard_normal((B, C, D)))
    proto = f32(rng.standard_normal((C, K, D)))
    f[0] = proto[:, 0] + 0.1*f[0]  # some features close to a prototype
    out["pcl_input"], out["pcl_target"], out["pcl_prototype"] = f, f32(t), proto
    pcl = lh.PrototypeContrastiveLoss(reduce=True, size_average=True)
    out["pcl_out"], (out["pcl_grad"],) = grad_of(lambda a: pcl(a, t64(t), t64(proto)), f)
    with torch.no_grad(): out["pcl_elementwise"] = out64(lh.PrototypeContrastiveLoss()(t64(f), t64(t), t64(proto)))
    # InstanceContrastiveLoss(batchSize=6) ------------------------------------------------------------------------
    Bi, Ci = 6, 4
    fi = f32(rng.standard_normal((Bi, Ci, D)))
    fi[1, 0] = fi[0, 0] + 0.2*fi[1, 0]
    ti = f32([[1, 1, -1, 0], [1, -1, -1, 1], [-1, 0, 1, -1], [1, -1, 0, -1], [0, 1, -1, 1], [-1, -1, 1, 0]])
    # no pos-pos pair at all (each class known positive in at most one image): no random call is made
    ti_nopp = f32([[1, -1, -1, 0], [-1, -1, -1, 1], [-1, 0, 1, -1], [0, 1, 0, -1], [0, -1, -1, 0], [-1, -1, 0, 0]])
    ti_none = np.zeros((Bi, Ci), np.float32); ti_none[0] = 1  # no known pair at all: the mean of nothing, NaN
    icl = lh.InstanceContrastiveLoss(Bi, reduce=True, size_average=True)
    out["icl_batch_size"], out["icl_input"] = np.int64(Bi), fi
    with torch.no_grad(): out["icl_distance"] = dist = out64(lh.InstanceContrastiveLoss(Bi)(t64(fi), t64(ti)))
    assert dist.shape == (Bi*(Bi-1)//2, Ci)
    for case, tt, seed in (("", ti, 7), ("_nopp", ti_nopp, 8), ("_none", ti_none, 9)):
        torch.manual_seed(seed)
        out[f"icl{case}_out"], (out[f"icl{case}_grad"],) = grad_of(lambda a: icl(a, t64(tt)), fi)
        out[f"icl{case}_target"], out[f"icl{case}_seed"] = tt, np.int64(seed)
        mine, counts, perms = icl_reference(dist, tt, seed)
        out[f"icl{case}_counts"] = np.array(counts)  # (#pos-pos, #pos-neg, #neg-neg) element pairs
        for k, p in perms.items(): out[f"icl{case}_perm_{k}"] = npy(p)
        if case == "_none": assert np.isnan(out[f"icl{case}_out"]) and np.isnan(npy(mine))
        else: assert npy(mine) == out[f"icl{case}_out"], case
        torch.manual_seed(seed)  # loss/SST.py ContrastiveLoss and loss/SARB.py ContrastiveLoss: the same code
        a = ls.ContrastiveLoss(Bi, reduce=True, size_average=True)(t64(fi), t64(tt))
        torch.manual_seed(seed)
        b = lsarb.ContrastiveLoss(Bi, reduce=True, size_average=True)(t64(fi), t64(tt))
        assert np.array_equal(npy(a), out[f"icl{case}_out"], equal_nan=True) and np.array_equal(npy(b), npy(a), equal_nan=True)
    assert counts and out["icl_counts"].min() > 0 and out["icl_nopp_counts"][0] == 0
    return out


# ---------------------------------------------------------------------------------------------------------------
def pseudo_labels(R):
    out, rng = {}, np.random.default_rng(404)
    lh, ls = R.lh, R.ls
    B, C = 6, 5
    P = C*(C-1)//2
    t = f32([[1, 0, 1, -1, 0], [0, 0, 0, 0, 0], [1, 0, -1, 0, 0], [-1, 0, -1, -1, 1], [1, 1, 0, 0, 1], [0, 1, 1, -1, -1]])
    cooc = f32(rng.standard_normal((B, P))*4 + 1.5)
    out["intra_cooc"], out["intra_target"] = cooc, t
    # SST: binary pseudo positives on unknown entries (mean co-occurrence prob. with the known positives >= margin)
    margins = np.array([0.95, 0.75, 0.5])
    out["intra_sst_margins"] = margins
    with float64_defaults():  # its (B, C, C) pseudo-label matrix is allocated with the default dtype
        out["intra_sst_out"] = np.stack([out64(ls.getIntraPseudoLabel(t64(cooc), t64(t), margin=float(m))) for m in margins])
    assert (out["intra_sst_out"][:, t != 0] == t[t != 0]).all() and out["intra_sst_out"][-1].sum() > t.sum()
    # HST: soft q = clamp(s - margin, 0, 1) on every entry, margin a learnable 0-d tensor; DTL loss 0.1*BCE(q, target)
    out["intra_hst_margin"] = np.float32(0.6)
    cooc_t, m_t = t64(cooc, grad=True), t64(out["intra_hst_margin"], grad=True)
    with float64_defaults(): q = lh.getIntraPseudoLabel(cooc_t, t64(t), margin=m_t)
    dtl = 0.1*lh.BCELoss(reduce=True, size_average=True)(q, t64(t))
    dtl.backward()
    out["intra_hst_q"], out["intra_hst_dtl"] = out64(q), out64(dtl)
    out["intra_hst_dtl_grad_margin"], out["intra_hst_dtl_grad_cooc"] = out64(m_t.grad), out64(cooc_t.grad)
    # the target HST.Train gives BCE(output, .): known labels plus the unknown entries with q > 0
    out["intra_hst_target"] = t + (t == 0)*(npy(q) > 0)
    # inter: mean cosine to a per-class memory (SST queue, zero rows where not filled yet) or to prototypes (HST)
    D, K = 8, 6
    centre = rng.standard_normal((C, D))
    queue = centre[:, None] + 0.4*rng.standard_normal((C, K, D)); queue[2, 4:] = 0; queue[4, 1:] = 0
    feat = rng.standard_normal((B, C, D)); feat[[0, 1, 4, 5]] = centre + 0.3*feat[[0, 1, 4, 5]]
    out["inter_feature"], out["inter_target"], out["inter_queue"] = f32(feat), t, f32(queue)
    out["inter_sst_margins"] = margins
    out["inter_sst_out"] = np.stack([out64(ls.getInterPseudoLabel(t64(feat), t64(t), t64(queue), margin=float(m)))
                                     for m in margins])
    assert (out["inter_sst_out"][:, t != 0] == t[t != 0]).all() and out["inter_sst_out"][-1].sum() > t.sum()
    Kp = 3
    proto = f32(centre[:, None] + 0.4*rng.standard_normal((C, Kp, D)))
    out["inter_prototype"], out["inter_hst_margin"] = proto, np.float32(0.5)
    feat_t, m_t = t64(feat, grad=True), t64(out["inter_hst_margin"], grad=True)
    q = lh.getInterPseudoLabel(feat_t, t64(t), t64(proto), margin=m_t)
    dtl = 0.1*lh.BCELoss(reduce=True, size_average=True)(q, t64(t))
    dtl.backward()
    out["inter_hst_q"], out["inter_hst_dtl"] = out64(q), out64(dtl)
    out["inter_hst_dtl_grad_margin"], out["inter_hst_dtl_grad_feature"] = out64(m_t.grad), out64(feat_t.grad)
    out["inter_hst_target"] = t + (t == 0)*(npy(q) > 0)
    # SST.updateFeature (copies only, float32 as the official queue): newest known positives first (batch order), truncated to exampleNum; queue starts at zeros
    Bq, Dq, Kq, steps = 3, 4, 4, 4
    holder = types.SimpleNamespace(posFeature=None, classNum=C)
    fs = f32(rng.standard_normal((steps, Bq, C, Dq)))
    ts = f32(rng.choice([1., 0., -1.], size=(steps, Bq, C), p=[.5, .25, .25]))
    queues = []
    for s in range(steps):
        R.SST.updateFeature(holder, torch.as_tensor(fs[s]), torch.as_tensor(ts[s]), Kq)
        queues.append(npy(holder.posFeature).copy())
    out["queue_features"], out["queue_targets"], out["queue_size"], out["queue_states"] = fs, ts, np.int64(Kq), np.stack(queues)
    # SST.py: the margin used by Train(epoch) (same for intra and inter), from the script's 0.95, generateLabelEpoch 5
    m, sched = 0.95, []
    for epoch in range(20):
        sched.append(m)
        if epoch >= 5: m = max(0.75, m - 0.025)
    out["sst_margin_schedule"], out["sst_generate_label_epoch"] = np.array(sched), np.int64(5)
    # HST computePrototype: KMeans per class over the known-positive class features; sklearn draws from the global
    # NumPy RandomState (random_state=None), so np.random.seed(s) before the call makes it reproducible
    import sklearn
    Dk, Ck, Kk = 4, 3, 3
    batches = [(torch.arange(4), torch.zeros(4, 1), t32(rng.choice([1., 0., -1.], size=(4, Ck), p=[.6, .2, .2])),
                None) for _ in range(4)]
    feats = [t32(rng.standard_normal((4, Ck, Dk)) + 3*rng.integers(0, 2, (4, Ck, 1))) for _ in range(4)]

    class Model:
        outputDim, prototype, _i = Dk, None, 0
        def eval(self): pass
        def __call__(self, x, onlyFeature=False):
            assert onlyFeature
            self._i += 1
            return feats[self._i - 1]
    model = Model()
    np.random.seed(55)
    R.lh.computePrototype(model, [(i, x, tt, tt) for i, x, tt, _ in batches], types.SimpleNamespace(classNum=Ck, prototypeNumber=Kk))
    out["kmeans_features"] = np.stack([npy(f) for f in feats])
    out["kmeans_targets"] = np.stack([npy(b[2]) for b in batches])
    out["kmeans_np_seed"], out["kmeans_k"], out["kmeans_prototypes"] = np.int64(55), np.int64(Kk), npy(model.prototype)
    out["sklearn_version"] = sklearn.__version__
    # the same with one RandomState(seed) passed to the per-class fits in class order, on the positives without the
    # 10 zero rows the official code prepends and strips again
    from sklearn.cluster import KMeans
    rs, fk, tk = np.random.RandomState(55), out["kmeans_features"].reshape(-1, Ck, Dk), out["kmeans_targets"].reshape(-1, Ck)
    for c in range(Ck):
        centres = KMeans(n_clusters=Kk, random_state=rs).fit(fk[tk[:, c] == 1, c]).cluster_centers_
        assert np.array_equal(centres, out["kmeans_prototypes"][c])
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reference", required=True, type=Path, help="checkout of HCP-MLR-PL")
    p.add_argument("--out", type=Path, default=HERE)
    a = p.parse_args()
    torch.set_num_threads(1)  # one summation order on every machine
    R = load_reference(a.reference.resolve())
    for name, fn in (("sarl_modules", sarl_modules), ("sst_hst_model", sst_hst_model),
                     ("losses", losses), ("pseudo_labels", pseudo_labels)):
        d = fn(R)
        np.savez_compressed(a.out/f"{name}.npz", **d)
        print(f"{name}.npz: {(a.out/f'{name}.npz').stat().st_size/1024:.1f} KiB, {len(d)} arrays")


if __name__ == "__main__":
    main()
