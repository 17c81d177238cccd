"""Regenerate the golden fixtures of SARB's and DSRB's blending from the official HCP-MLR-PL code.

    python tests/golden/make_golden_blend.py --reference /path/to/HCP-MLR-PL [--out tests/golden]

Writes sarb.npz and dsrb.npz (np.savez_compressed). The official modules are imported from the checkout at run
time (nothing of them is copied here) and run on the CPU: their `.cuda()` calls and the NumPy aliases removed in
NumPy 1.24 are patched in this process only.

- sarb.npz: `SARB.mixupLabel`; the official `SARB.forward` run on a stand-in model whose backbone, decoupling,
  GNN and classifier are pass-throughs, so that the GNN's inputs are the official ILRB / PLRB blended features;
  and the full SARB model (ResNet-101, weights from `weights.fill_state_dict`) in eval and in training mode.
- dsrb.npz: model/DSRB.py cannot build a model as released (undefined names), so its three blending methods are
  called unbound on minimal stand-ins (`types.SimpleNamespace`) holding just the attributes each reads.

Every random draw the official code makes is replayed here from the same seed, stored, and the official outputs
are re-derived from the stored draws with an independent rule (asserted equal), which also pins the draw order:
after each official call the global CPU generator must be exactly where the replay left it. Weights are never
stored, only a seed, a scale and the {name: shape} of the state dict. Running it twice gives identical files.

Precision: inputs, weights, α and β hold float32 values; the official code runs in float64 (`.double()`, float64
inputs) and every output is stored in float64. The random draws are float32, as the official code and mlrpl draw
them, handed to the official blends as float64 copies (`official.float64_draws`: their mask multiplies a 0-d
float64 1 - β, which PyTorch would keep in float32, value and gradient). loss/SARB.py's BCELoss casts its inputs to
float32; it is loss/HST.py's BCELoss apart from that cast (asserted bit for bit on float32 inputs), so SARB's loss
terms are taken in float64 from loss/HST.py's.
"""
import argparse, json, sys, types
from pathlib import Path

import numpy as np
import torch
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from weights import fill_state_dict, shapes_of, shapes_to_json  # noqa: E402
from official import adjacency, f32, float64_draws, npy, out64, patch_for_cpu, sum_bound, t64  # noqa: E402

FIXED = ("wordFeatures", "inMatrix", "outMatrix", "GraphNeuralNetwork.inMatrix", "GraphNeuralNetwork.outMatrix")
SOURCE = {"wordFeatures": "word_features", "inMatrix": "adjacency", "outMatrix": "adjacency_T",
          "GraphNeuralNetwork.inMatrix": "adjacency", "GraphNeuralNetwork.outMatrix": "adjacency_T"}
KEPT = {"alpha": 0.5, "beta": 0.5}  # the constructor's values, left out of the fill


def load_reference(ref: Path):
    "Import the official modules, with `.cuda()` a no-op and np.float/np.int restored."
    patch_for_cpu(ref)
    import loss.HST as lh, loss.SARB as lsarb, loss.DSRB as ldsrb
    import model.SARB as msarb, model.DSRB as mdsrb
    return types.SimpleNamespace(SARB=msarb.SARB, DSRB=mdsrb.DSRB, lh=lh, lsarb=lsarb, ldsrb=ldsrb)


def grad(y, x):
    "d(y.sum())/dx, zeros where y does not depend on x."
    g, = torch.autograd.grad(y.sum(), x, retain_graph=True, allow_unused=True)
    return np.zeros(tuple(x.shape)) if g is None else out64(g)


def same_state(after, replay, what):
    assert torch.equal(after, replay), f"{what}: the official call drew more or fewer numbers than the replay"


# ---------------------------------------------------------------------------------------------------------------
# independent re-derivations (broadcasting, no repeat) used only to check that the stored draws explain the outputs
def ilrb_coef(t, alpha):
    "1 everywhere except alpha where t is unknown and the batch-flipped t is a known positive."
    ft = t.flip(0)
    return torch.where((t == 0) & (ft == 1), alpha, torch.ones_like(t)), ft


def plrb_mask(t, r):
    "One class per image: the unknown class with the largest draw; class 0 where the image has no unknown."
    m = r*(t == 0)
    return torch.zeros_like(t).scatter_(1, m.argmax(1, keepdim=True), 1.)


def peak_quadrant(F, half):
    "F (B, H, W, C, D): 2*[row of the peak of sum_D F >= half] + [column >= half], (B, C)."
    s = F.sum(-1)                                        # (B, H, W, C)
    row = s.amax(2).argmax(1)                            # (B, C)
    col = s.amax(1).argmax(1)
    return 2*(row >= half).long() + (col >= half).long(), row, col


# ---------------------------------------------------------------------------------------------------------------
class Recorder(nn.Module):
    "Stands in for the GNN: returns its input and keeps a copy (the official forward's blended features)."
    def __init__(self): super().__init__(); self.seen = []
    def forward(self, x): self.seen.append(x); return x


def sarb_stub(R, f, prototype, alpha, beta):
    "A SARB instance whose forward reaches the blending with semanticFeature = f (B, C, D) and no learnt layer."
    B, C, D = f.shape
    m = R.SARB.__new__(R.SARB)
    nn.Module.__init__(m)
    m.classNum, m.imageFeatureDim, m.outputDim, m.prototypeNum = C, D, D, prototype.shape[1]
    m.backbone = lambda x: x                             # input: zeros (B, D), so size(1) == imageFeatureDim
    m.wordFeatures = None
    m.SemanticDecoupling = lambda fmap, words: (f,)
    m.GraphNeuralNetwork = Recorder()
    m.fc = lambda x: x[:, :D]
    m.classifiers = lambda o: o.sum(-1)
    m.prototype = prototype
    m.alpha, m.beta = nn.Parameter(t64(alpha)), nn.Parameter(t64(beta))
    return m


def sarb(R):
    out, rng = {}, np.random.default_rng(505)
    B, C, D, K = 6, 5, 8, 3
    t = rng.choice([1., 0., -1.], size=(B, C), p=[.35, .35, .3])
    t[2] = (1, -1, -1, 1, -1)                            # an image with no unknown entry (class 0 a known positive)
    t[3] = (-1, 0, -1, 1, 0)                             # its flip partner: unknown where row 2 is positive
    t[0, :3], t[5, :3] = (0, 1, 0), (1, 0, 1)            # more ILRB blends, both directions of one pair
    t[1, :2], t[4, :2] = (-1, 0), (1, 0)                 # an unknown facing an unknown: stays 0
    out["target"] = t = f32(t)
    T = t64(t)
    assert ((t == 0).sum(1) == 0).sum() == 1
    # (a) mixupLabel(label1, label2, alpha), alpha a 0-d tensor -----------------------------------------------------
    out["alpha"] = np.float32(0.3)
    a = t64(out["alpha"], grad=True)
    coef, mixed = R.SARB.mixupLabel(None, T, T.flip(0), a)
    out["label_coef"], out["label_mixed"], out["label_grad_alpha"] = out64(coef), out64(mixed), grad(mixed, a)
    c2, ft = ilrb_coef(T, t64(out["alpha"]))
    assert torch.equal(coef.detach(), c2) and torch.equal(mixed.detach(), c2*T + (1 - c2)*ft)
    # (b, c) the official forward on a pass-through model: ILRB then PLRB -----------------------------------------
    out["feature"] = f = f32(rng.standard_normal((B, C, D)))
    out["prototype"] = P = f32(rng.standard_normal((C, K, D)))
    out["beta"], out["seed"] = np.float32(0.4), np.int64(seed := 10)
    m = sarb_stub(R, t64(f), t64(P), out["alpha"], out["beta"])
    torch.manual_seed(seed)
    with float64_draws(): res = m(torch.zeros(B, D, dtype=torch.float64), target=T)
    after = torch.get_rng_state()
    _, sem, _, t1, _, t2 = res
    seen = m.GraphNeuralNetwork.seen
    assert len(seen) == 3 and seen[0] is sem
    f1, f2 = seen[1], seen[2]
    out["ilrb_feature"], out["ilrb_target"] = out64(f1), out64(t1)
    out["ilrb_feature_grad_alpha"], out["ilrb_target_grad_alpha"] = grad(f1, m.alpha), grad(t1, m.alpha)
    out["plrb_feature"], out["plrb_target"] = out64(f2), out64(t2)
    out["plrb_feature_grad_beta"], out["plrb_target_grad_beta"] = grad(f2, m.beta), grad(t2, m.beta)
    # replay: randint(K, (1,)) then rand(target.size()), nothing before or after
    torch.manual_seed(seed)
    k = torch.randint(K, (1,))
    r = torch.rand(T.size())
    same_state(after, torch.get_rng_state(), "SARB.forward")
    mask = plrb_mask(T, r)
    out["plrb_prototype_index"], out["plrb_rand"], out["plrb_mask"] = np.int64(k.item()), npy(r), npy(mask)
    Ft, Pt, bt = t64(f), t64(P)[:, k.item()], t64(out["beta"])
    c1 = coef.detach()[..., None]
    torch.testing.assert_close(f1.detach(), c1*Ft + (1 - c1)*Ft.flip(0), rtol=0, atol=0)
    blend = bt*Ft + (1 - bt)*Pt                          # one prototype index for every class and image
    # the same products and sums as the official blend, plus mask·x + (1 - mask)·F with a 0/1 mask: exact
    torch.testing.assert_close(f2.detach(), torch.where(mask[..., None] == 1, blend, Ft), rtol=0, atol=0)
    assert torch.equal(t2.detach(), torch.where(mask == 1, 1 - bt, T))
    assert k.item() != 0 and mask[2, 0] == 1 and t2[2, 0] != T[2, 0]      # the defect: known positive of image 2 overwritten with 1-beta
    out["plrb_no_unknown_row"] = np.int64(2)
    return out


# ---------------------------------------------------------------------------------------------------------------
def sarb_model(R):
    out, rng = {}, np.random.default_rng(606)
    B, C, S, K = 2, 4, 128, 3
    labels = np.where(rng.random((10, C)) < 0.5, 1, -1); labels[0] = 1
    A = adjacency(labels)
    words = f32(rng.standard_normal((C, 300)))
    img = np.round(rng.standard_normal((B, 3, S, S))*8)/8
    img[1] = img[1]*0.5 + 0.5
    out["images"], out["labels"], out["adjacency"], out["word_features"] = f32(img), labels.astype(np.int8), f32(A), words
    out["dims"] = json.dumps(dict(prototypeNum=K, imageFeatureDim=1024, intermediaDim=512, outputDim=1024,
                                  classNum=C, wordFeatureDim=300, timeStep=3))
    out["fixed"] = json.dumps(SOURCE)
    out["kept"] = json.dumps(KEPT)
    torch.manual_seed(0)  # the constructor's random init is overwritten; seeded only to keep runs quiet
    m = R.SARB(A, words, prototypeNum=K, classNum=C)
    sd = m.state_dict()
    assert all(k in sd for k in FIXED + tuple(KEPT)) and all(float(sd[k]) == v for k, v in KEPT.items())
    shapes = shapes_of(sd, FIXED + tuple(KEPT))
    seed, scale = 41, 0.033
    weights = fill_state_dict(shapes, seed, {k: sd[k] for k in FIXED + tuple(KEPT)}, scale=scale)
    out["seed"], out["scale"], out["shapes"], out["num_entries"] = np.int64(seed), np.float64(scale), shapes_to_json(shapes), np.int64(len(sd))
    out["prototype"] = proto = f32(rng.standard_normal((C, K, 1024)))
    out["target"] = t = f32([[1, 0, -1, 0], [-1, 1, 1, -1]])   # image 1 has no unknown entry
    x, T = t64(out["images"]), t64(t)
    # eval: logits only
    m.load_state_dict(weights, strict=True)
    m.double().eval()  # weights, adjacency and word features keep their float32 values
    with torch.no_grad(): out["eval_logits"] = out64(m(x))
    # training mode (BN of layer4 and changeChannel on batch statistics), fresh weights, seeded right before the call
    bce = R.lh.BCELoss(reduce=True, size_average=True)  # loss/SARB.py's without its float32 cast (checked below)
    for case, (alpha, beta) in (("train", (0.5, 0.5)), ("clamp", (1.25, -0.5))):
        m.load_state_dict(weights, strict=True)
        m.prototype = t64(proto)
        for p in m.parameters(): p.requires_grad_(False)
        m.alpha.requires_grad_(True); m.beta.requires_grad_(True)
        m.alpha.data.fill_(alpha); m.beta.data.fill_(beta)
        m.train(); m.backbone.eval(); m.backbone.layer4.train()
        torch.manual_seed(13)
        with float64_draws(): res = m(x, target=T)
        after = torch.get_rng_state()
        out[f"{case}_seed"] = np.int64(13)
        torch.manual_seed(13)
        k, r = torch.randint(K, (1,)), torch.rand(T.size())
        same_state(after, torch.get_rng_state(), "SARB.forward (model)")
        out[f"{case}_alpha_beta_in"] = f32([alpha, beta])
        out[f"{case}_alpha_beta_after"] = np.array([m.alpha.item(), m.beta.item()])  # clamped in place by forward
        for name, v in zip(("result", "semantic_feature", "mixed_result_1", "mixed_target_1", "mixed_result_2",
                            "mixed_target_2"), res):
            out[f"{case}_{name}"] = out64(v)
        mask = plrb_mask(T, r)
        a_, b_ = m.alpha.detach(), m.beta.detach()
        coef, ft = ilrb_coef(T, a_)
        assert torch.equal(res[3].detach(), coef*T + (1 - coef)*ft)
        assert torch.equal(res[5].detach(), torch.where(mask == 1, 1 - b_, T))
        assert k.item() != 0 and mask[1, 0] == 1
        out[f"{case}_prototype_index"], out[f"{case}_rand"], out[f"{case}_mask"] = np.int64(k.item()), npy(r), npy(mask)
        # official loss terms 3 and 4 and their gradients w.r.t. alpha and beta (the targets carry gradient too)
        l3, l4 = bce(res[2], res[3]), bce(res[4], res[5])
        for a_, b_ in ((res[2], res[3]), (res[4], res[5])):  # the official SARB loss is this one on float32 inputs
            a32, b32 = a_.detach().float(), b_.detach().float()
            assert torch.equal(R.lsarb.BCELoss(reduce=True, size_average=True)(a32, b32), bce(a32, b32))
        out[f"{case}_loss3"], out[f"{case}_loss4"] = out64(l3), out64(l4)
        out[f"{case}_loss3_grad_alpha"], out[f"{case}_loss4_grad_beta"] = grad(l3, m.alpha), grad(l4, m.beta)
        out[f"{case}_loss3_grad_alpha_via_target"] = grad(bce(res[2].detach(), res[3]), m.alpha)
        out[f"{case}_loss4_grad_beta_via_target"] = grad(bce(res[4].detach(), res[5]), m.beta)
        assert grad(l3, m.beta) == 0 and grad(l4, m.alpha) == 0
        for k_ in ("result", "semantic_feature", "mixed_result_1", "mixed_result_2"):
            a = out[f"{case}_{k_}"]; assert np.isfinite(a).all() and a.std() > 1e-3, (case, k_)
    return out


# ---------------------------------------------------------------------------------------------------------------
def planted_maps(rng, B, H, C, D, peaks):
    "Noise (B, H, W, C, D) with sum_D raised by +8 at peaks[b, c] = (row, col), so the peak is unambiguous."
    F = rng.standard_normal((B, H, H, C, D))*0.5
    for b in range(B):
        for c in range(C):
            h, w = peaks[b][c]
            F[b, h, w, c] += 8.0/D
    return f32(F)


def dsrb_mix(R):
    out, rng = {}, np.random.default_rng(707)
    B, C, D = 4, 5, 8
    t = f32([[0, 1, 0, -1, 0],     # 3 unknown; class 0 unknown where the flip partner (row 3) is positive
             [1, 1, 1, -1, -1],    # no unknown entry
             [-1, 0, 1, 1, -1],    # 1 unknown (fewer than topK=2); partner row 1 positive there
             [1, 0, -1, 1, 0]])    # 2 unknown; class 1 unknown where row 0 is positive
    out["target"] = t
    T = t64(t)
    # (a) mixupInstance_featuremap -------------------------------------------------------------------------------
    out["inst_alpha"] = np.float32(0.3)
    out["inst_F"] = Fi = f32(rng.standard_normal((B, 4, 4, C, D)))
    obj = types.SimpleNamespace(alpha=t64(out["inst_alpha"], grad=True))
    mf, mt = R.DSRB.mixupInstance_featuremap(obj, t64(Fi), T)
    out["inst_feature"], out["inst_target"] = out64(mf), out64(mt)
    out["inst_feature_grad_alpha"], out["inst_target_grad_alpha"] = grad(mf, obj.alpha), grad(mt, obj.alpha)
    coef, ft = ilrb_coef(T, t64(out["inst_alpha"]))
    Ft = t64(Fi)
    w = coef[:, None, None, :, None]
    terms = w*Ft + (1 - w)*Ft.flip(0)                    # the official terms; summed over H, W in another order
    assert ((mf.detach() - terms.sum((1, 2))).abs() <= sum_bound(terms, (1, 2))).all()
    assert torch.equal(mt.detach(), coef*T + (1 - coef)*ft)
    x = torch.linspace(-2, 2, B*C).view(B, C)  # loss/DSRB.py is loss/SARB.py (only the line endings differ)
    assert torch.equal(R.ldsrb.BCELoss(reduce=True, size_average=True)(x, mt.detach()),
                       R.lsarb.BCELoss(reduce=True, size_average=True)(x, mt.detach()))
    # (b) mixupPrototype_featuremap, H = W = 4 and 7, topK = 1 and 2 ------------------------------------------------
    out["proto_beta"] = np.float32(0.4)
    for H in (4, 7):
        if H == 4:
            peaks = [[tuple(rng.integers(0, H, 2)) for _ in range(C)] for _ in range(B)]
        else:  # the odd split: rows/cols 0..2 are the first half, 3..6 the second
            cells = [(2, 2), (2, 3), (3, 2), (3, 3), (0, 6), (6, 0), (3, 0), (2, 6), (6, 6), (0, 0)]
            peaks = [[cells[(b*C + c) % len(cells)] for c in range(C)] for b in range(B)]
        out[f"proto_h{H}_peaks"] = np.array(peaks, np.int64)       # (B, C, 2) planted (row, col)
        out[f"proto_h{H}_F"] = F = planted_maps(rng, B, H, C, D, peaks)
        out[f"proto_h{H}_prototype_featuremap"] = P = f32(rng.standard_normal((C, 4, H, H, D)))
        Ft, Pt = t64(F), t64(P)
        q0, row, col = peak_quadrant(Ft, H // 2)
        assert (row.numpy() == np.array(peaks)[..., 0]).all() and (col.numpy() == np.array(peaks)[..., 1]).all()
        out[f"proto_h{H}_peak_quadrant"] = npy(q0)
        for k in (1, 2):
            key, seed = f"proto_h{H}_top{k}", 100 + 10*H + k
            obj = types.SimpleNamespace(beta=t64(out["proto_beta"], grad=True), topK=k, prototype_featuremap=Pt)
            torch.manual_seed(seed)
            with float64_draws(): mf, mt = R.DSRB.mixupPrototype_featuremap(obj, Ft, T)
            after = torch.get_rng_state()
            torch.manual_seed(seed)
            shift = torch.randint(1, 4, (B, C))                     # drawn first, for every (b, c)
            r = torch.rand(B, C)                                    # then the mask draw
            same_state(after, torch.get_rng_state(), key)
            quad = (q0 - shift) % 4                                 # never the image's own peak quadrant
            score = r*(T == 0)
            top = torch.topk(score, k, dim=1)[1]                    # CPU tie-break among zeros: implementation-defined
            mask = torch.zeros_like(T).scatter_(1, top, 1.)
            ties = ((T == 0).sum(1) < k).numpy()                    # rows where topk had to pick among zeros
            bt = t64(out["proto_beta"])
            proto = Pt[torch.arange(C)[None], quad].permute(0, 2, 3, 1, 4)  # (B, H, W, C, D)
            mm = mask[:, None, None, :, None]
            terms = mm*(bt*Ft + (1 - bt)*proto) + (1 - mm)*Ft   # the official terms; summed over H, W in another order
            want = terms.sum((1, 2))
            assert ((mf.detach() - want).abs() <= sum_bound(terms, (1, 2))).all(), key
            assert torch.equal(mt.detach(), torch.where(mask == 1, 1 - bt, T))
            # the unknown entries are always among the picks (their draw is > 0); only the extra picks are ties
            assert (mask.sum(1) == k).all() and ((mask*(T == 0)).sum(1) == torch.clamp((T == 0).sum(1), max=k)).all()
            out[f"{key}_seed"], out[f"{key}_shift"], out[f"{key}_rand"] = np.int64(seed), npy(shift), npy(r)
            out[f"{key}_quadrant"], out[f"{key}_mask"], out[f"{key}_tie_rows"] = npy(quad), npy(mask), ties
            out[f"{key}_feature"], out[f"{key}_target"] = out64(mf), out64(mt)
            out[f"{key}_feature_grad_beta"], out[f"{key}_target_grad_beta"] = grad(mf, obj.beta), grad(mt, obj.beta)
    return out


class FakeModel:
    "Returns precomputed (semanticFeature, featuremapWithCoef, Coefficient) for the batch whose number is input[0]."
    def __init__(self, fmaps, H): self.fmaps, self.H, self.evaluated = fmaps, H, False
    def eval(self): self.evaluated = True
    def __call__(self, input, onlyFeature=False):
        assert onlyFeature
        F = t64(self.fmaps[int(input[0])])                          # (B, H, W, C, D)
        coef = torch.full(F.shape[:4], 1.0/(self.H*self.H))         # only its size(1) is read
        return F.sum((1, 2)), F, coef


def run_compute_prototype(R, fmaps, targets):
    "The official computePrototype_featuremap on a fake loader; returns the prototypes or the exception."
    n, B, H, _, C, D = fmaps.shape
    model = FakeModel(fmaps, H)
    loader = [(torch.arange(B) + i*B, torch.tensor([i]*B), torch.as_tensor(targets[i]), torch.as_tensor(targets[i]))
              for i in range(n)]
    try:
        R.DSRB.computePrototype_featuremap(types.SimpleNamespace(), model, loader, types.SimpleNamespace(classNum=C))
    except Exception as e:  # noqa: BLE001 - the failure is what is recorded
        return None, f"{type(e).__name__}: {e}"
    assert model.evaluated
    return out64(model.prototype_featuremap), ""


def expected_prototypes(fmaps, targets, cap=100):
    """Per (class, quadrant): sum of the first `cap` maps / (n + 1) (the zero map counts); empty: mean of all kept.
    Also the bound on how far a mean summed in another order can be from it (`sum_bound` of the maps, / (n + 1))."""
    n, B, H, _, C, D = fmaps.shape
    F, T = t64(fmaps).reshape(n*B, H, H, C, D), t64(targets).reshape(n*B, C)
    q, _, _ = peak_quadrant(F, H // 2)
    out, bound = torch.zeros(C, 4, H, H, D, dtype=torch.float64), torch.zeros(C, 4, H, H, D, dtype=torch.float64)
    counts = np.zeros((C, 4), np.int64)
    for c in range(C):
        kept = {j: [] for j in range(4)}
        for i in range(n*B):
            if T[i, c] == 1 and len(kept[int(q[i, c])]) < cap: kept[int(q[i, c])].append(F[i, :, :, c])
        every = torch.stack([x for j in range(4) for x in kept[j]])
        for j in range(4):
            counts[c, j] = len(kept[j])
            maps = torch.stack(kept[j]) if kept[j] else every
            out[c, j] = maps.sum(0)/(len(kept[j]) + 1) if kept[j] else every.mean(0)
            bound[c, j] = sum_bound(maps, 0, extra=1)/(len(kept[j]) + 1 if kept[j] else every.shape[0])
    return out, bound, counts, npy(q).reshape(n, B, C)


def dsrb_prototypes(R):
    out, rng = {}, np.random.default_rng(808)
    # (c) 3 batches of 4, C=5, H=W=4, D=8; positives placed by quadrant -----------------------------------------
    n, B, C, H, D = 3, 4, 5, 4, 8
    plan = {0: [0, 1, 2, 3, 0, 2],  # class: quadrant of each of its positives, in loader order
            1: [0, 0, 0],           # one quadrant only: three fallbacks
            2: [1, 3, 3],
            3: [2],                 # a single positive
            4: [0, 1, 2, 2]}
    slots = rng.permutation(n*B)
    targets = np.where(rng.random((n*B, C)) < 0.5, 0., -1.)
    peaks = [[tuple(rng.integers(0, H, 2)) for _ in range(C)] for _ in range(n*B)]  # non-positives: anywhere
    for c, quads in plan.items():
        for i, qd in zip(sorted(slots[:len(quads)]), quads):
            targets[i, c] = 1
            peaks[i][c] = (2*(qd >= 2) + rng.integers(0, 2), 2*(qd % 2) + rng.integers(0, 2))
        slots = np.roll(slots, 5)
    fmaps = planted_maps(rng, n*B, H, C, D, peaks).reshape(n, B, H, H, C, D)
    targets = f32(targets).reshape(n, B, C)
    proto, err = run_compute_prototype(R, fmaps, targets)
    assert not err, err
    want, bound, counts, q = expected_prototypes(fmaps, targets)
    assert ((torch.as_tensor(proto) - want).abs() <= bound).all()
    assert counts[1, 1:].sum() == 0 and (counts[0] > 0).all() and counts[3].sum() == 1
    out["cp_fmaps"], out["cp_targets"], out["cp_quadrant"], out["cp_counts"] = fmaps, targets, q, counts
    out["cp_prototype_featuremap"] = proto
    # the cap: 27 batches of 4 tiny maps (C=2, H=W=2, D=2), class 0 positive with its peak in quadrant 0 every time
    n, B, C, H, D = 27, 4, 2, 2, 2
    t = np.full((n*B, C), -1.); t[:, 0] = 1; t[[0, 5, 9], 1] = 1; t[[1, 2], 1] = 0
    peaks = [[(0, 0), (1, 1)] for _ in range(n*B)]
    fm = planted_maps(rng, n*B, H, C, D, peaks).reshape(n, B, H, H, C, D)
    tt = f32(t).reshape(n, B, C)
    proto, err = run_compute_prototype(R, fm, tt)
    assert not err, err
    want, bound, counts, _ = expected_prototypes(fm, tt, cap=100)
    assert ((torch.as_tensor(proto) - want).abs() <= bound).all()
    assert counts[0, 0] == 100 and counts[1, 3] == 3
    wrong, _, _, _ = expected_prototypes(fm, tt, cap=101)
    assert not torch.allclose(torch.as_tensor(proto), wrong)
    out["cap_fmaps"], out["cap_targets"], out["cap_counts"], out["cap_prototype_featuremap"] = fm, tt, counts, proto
    out["cap_limit"] = np.int64(100)
    # a class without any known positive: the official code fails (torch.cat of an empty list)
    t0 = out["cp_targets"].copy(); t0[..., 3] = np.where(t0[..., 3] == 1, -1, t0[..., 3])
    proto, err = run_compute_prototype(R, out["cp_fmaps"], t0)
    assert proto is None and err
    out["empty_class_targets"], out["empty_class_error"] = t0, err
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reference", required=True, type=Path, help="checkout of HCP-MLR-PL")
    p.add_argument("--out", type=Path, default=HERE)
    a = p.parse_args()
    torch.set_num_threads(1)  # one summation order on every machine
    R = load_reference(a.reference.resolve())
    files = {"sarb": lambda: {**sarb(R), **{f"model_{k}": v for k, v in sarb_model(R).items()}},
             "dsrb": lambda: {**dsrb_mix(R), **dsrb_prototypes(R)}}
    for name, fn in files.items():
        d = fn()
        np.savez_compressed(a.out/f"{name}.npz", **d)
        print(f"{name}.npz: {(a.out/f'{name}.npz').stat().st_size/1024:.1f} KiB, {len(d)} arrays")


if __name__ == "__main__":
    main()
