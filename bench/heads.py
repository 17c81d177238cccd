"""Time one SST training step of the head (SARL + IST + the SST losses) at COCO scale, and its peak memory.

    python bench/heads.py [--reference /path/to/HCP-MLR-PL] [--batch 8] [--classes 80] [--steps 5] [--device cpu|cuda]

The step is forward + backward on a (B, 1024, 7, 7) feature map, as after ResNet-101 and changeChannel (the map
takes a gradient, as it would from the backbone): semantic decoupling -> gated GNN -> classifier, IST's
C(C-1)/2 pair logits, and partial BCE + 10 * co-occurrence ASL + 0.05 * instance contrastive loss.
With --reference, the official modules (imported at run time from that checkout) run the same function with the
same weights, side by side. Each side runs in fresh subprocesses: one measures the peak memory of a step above
the inputs, the weights and their gradients, one times the steps.
"""
import argparse, gc, json, os, resource, statistics, subprocess, sys, tempfile, time, types
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

D, I, O, E, T = 1024, 512, 1024, 300, 3  # feature size, intermediate size, output size, word size, GNN rounds
W_COOC, W_INST = 10.0, 0.05  # weights of the co-occurrence ASL and the instance contrastive loss
MB = 2**20


# ---------------------------------------------------------------------------------------------- inputs

def make_inputs(batch, classes, seed=0):
    "Feature map, word embeddings, row-normalised label graph and partial targets (~10% known)."
    g = torch.Generator().manual_seed(seed)
    fmap = torch.randn(batch, D, 7, 7, generator=g)
    words = torch.randn(classes, E, generator=g)
    counts = torch.rand(classes, classes, generator=g)**4 * (torch.rand(classes, classes, generator=g) < 0.3)
    counts.fill_diagonal_(0)
    adj = counts / counts.sum(1, keepdim=True).clamp(min=1e-12)  # row-normalised co-occurrence
    known = torch.rand(batch, classes, generator=g) < 0.10
    pos = torch.rand(batch, classes, generator=g) < 0.3
    target = torch.where(known, torch.where(pos, 1., -1.), 0.)
    target[:2, 0] = 1.  # at least one positive-positive image pair, so the contrastive loss subsamples
    return dict(fmap=fmap, words=words, adj=adj, target=target)


# ---------------------------------------------------------------------------------------------- the two sides

def pair_lists(c):
    "Class pairs i < j in the official order."
    return [i for i in range(c) for j in range(i + 1, c)], [j for i in range(c) for j in range(i + 1, c)]


def import_official(reference):
    "The official modules and losses, patched to run without CUDA and with NumPy >= 1.24."
    np.float = float  # the official loss still uses the removed alias
    sys.path.insert(0, str(reference))
    from model.SemanticDecoupling import SemanticDecoupling
    from model.GraphNeuralNetwork import GatedGNN
    from model.Element_Wise_Layer import Element_Wise_Layer
    from loss.SST import BCELoss, intraAsymmetricLoss
    try: from loss.HST import InstanceContrastiveLoss
    except ImportError: from loss.SST import ContrastiveLoss as InstanceContrastiveLoss  # the same code
    return types.SimpleNamespace(SemanticDecoupling=SemanticDecoupling, GatedGNN=GatedGNN, Element_Wise_Layer=Element_Wise_Layer,
                           BCELoss=BCELoss, intraAsymmetricLoss=intraAsymmetricLoss,
                           InstanceContrastiveLoss=InstanceContrastiveLoss)


class OfficialHead(nn.Module):
    "The official SST model after its backbone: the official submodules, chained as its forward chains them."
    def __init__(self, off, adj, words):
        super().__init__()
        c = words.shape[0]
        self.classNum = c
        self.wordFeatures = nn.Parameter(words.clone(), requires_grad=False)
        self.inMatrix = nn.Parameter(adj.clone(), requires_grad=False)
        self.outMatrix = nn.Parameter(adj.t().contiguous(), requires_grad=False)
        self.SemanticDecoupling = off.SemanticDecoupling(c, D, E, intermediaDim=I)
        self.GraphNeuralNetwork = off.GatedGNN(D, T, self.inMatrix, self.outMatrix)
        self.fc = nn.Linear(2*D, O)
        self.classifiers = off.Element_Wise_Layer(c, O)
        self.intra_fc_1 = nn.Linear(D, I)
        self.intra_fc_2 = nn.Linear(2*I, O)
        self.intra_fc_3 = nn.Linear(O, O)
        self.intra_classifiers = off.Element_Wise_Layer(c*(c - 1)//2, O)
        self.first, self.second = pair_lists(c)

    def forward(self, fmap):
        b, c = fmap.shape[0], self.classNum
        sem = self.SemanticDecoupling(fmap, self.wordFeatures)[0]  # (B, C, D)
        h = self.GraphNeuralNetwork(sem)  # (B, C, D)
        out = torch.tanh(self.fc(torch.cat((h.reshape(b*c, -1), sem.reshape(b*c, -1)), 1))).view(b, c, -1)
        logits = self.classifiers(out)  # (B, C)
        g = self.intra_fc_1(sem)  # (B, C, I)
        g = torch.cat((g[:, self.first, :], g[:, self.second, :]), 2)  # (B, P, 2I)
        r = self.intra_fc_3(F.relu(self.intra_fc_2(g), inplace=True))  # (B, P, O); the official ReLU is in place
        return logits, self.intra_classifiers(r), sem


class OursHead(nn.Module):
    "mlrpl's SARL head and IST on its class features."
    def __init__(self, adj, words):
        super().__init__()
        from mlrpl.sarl import SARLHead
        from mlrpl.ist import IntraImageTransfer
        self.head = SARLHead(adj.numpy(), words.numpy(), img_dim=D, inter_dim=I, out_dim=O, time_steps=T)
        self.ist = IntraImageTransfer(words.shape[0], D, I, O)

    def forward(self, fmap):
        out = self.head(fmap)
        return out["logits"], self.ist(out["features"]), out["features"]


def build(side, data, reference):
    "Model and `loss(logits, pair_logits, features, target)` of one side."
    if side == "official":
        off = import_official(reference)
        model = OfficialHead(off, data["adj"], data["words"])
        model.load_state_dict(data["official_state"])
        bce = off.BCELoss(reduce=True, size_average=True)
        asl = off.intraAsymmetricLoss(data["words"].shape[0], gamma_neg=2, gamma_pos=1, reduce=True, size_average=True)
        inst = off.InstanceContrastiveLoss(data["fmap"].shape[0], reduce=True, size_average=True)
        terms = (lambda lg, pr, f, t: bce(lg, t), lambda lg, pr, f, t: asl(pr, t), lambda lg, pr, f, t: inst(f, t))
    else:
        from mlrpl.losses import partial_bce, cooccurrence_loss, instance_contrastive_loss
        model = OursHead(data["adj"], data["words"])
        if "official_state" in data:
            from mlrpl.compat import convert_official
            sd = convert_official(data["official_state"])
            sd.update({k: v for k, v in model.state_dict().items() if k in ("head.adj", "head.words")})
            model.load_state_dict(sd, strict=True)
        terms = (lambda lg, pr, f, t: partial_bce(lg, t), lambda lg, pr, f, t: cooccurrence_loss(pr, t),
                 lambda lg, pr, f, t: instance_contrastive_loss(f, t))

    def loss(lg, pr, f, t):
        parts = []
        for term in terms:
            torch.manual_seed(0)  # the contrastive loss's random subsampling: the same draws on both sides
            parts.append(term(lg, pr, f, t))
        return parts[0] + W_COOC*parts[1] + W_INST*parts[2]
    return model, loss


# ---------------------------------------------------------------------------------------------- worker

def rss_now():
    "Resident set size of this process in bytes."
    with open("/proc/self/statm") as f: return int(f.read().split()[1])*os.sysconf("SC_PAGE_SIZE")


def reset_peak_rss():
    "Reset the kernel's high-water mark of the resident set; False where that is not possible."
    try:
        with open("/proc/self/clear_refs", "w") as f: f.write("5")
        return True
    except OSError: return False


def peak_rss(reset_ok):
    "High-water mark of the resident set in bytes (VmHWM after a reset, else ru_maxrss)."
    if reset_ok:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"): return int(line.split()[1])*1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss*1024


def worker(a):
    torch.set_num_threads(a.threads)
    if a.device == "cpu": torch.Tensor.cuda = lambda self, *args, **kw: self  # the official code calls .cuda()
    dev = torch.device(a.device)
    data = torch.load(Path(a._dir)/"data.pt")
    model, loss_fn = build(a._worker, data, a.reference)
    model.to(dev)
    fmap0, target = data["fmap"].to(dev), data["target"].to(dev)
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params: p.grad = torch.zeros_like(p)  # gradients count with the weights, not with the step
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    def step():
        fmap = fmap0.detach().requires_grad_()  # the backbone's output: its gradient is part of the step
        logits, pairs, feats = model(fmap)
        loss = loss_fn(logits, pairs, feats, target)
        loss.backward()
        return logits.detach(), pairs.detach(), loss.detach(), fmap.grad

    res = {}
    if a._task == "memory":
        step()  # warm-up: one-time allocations (thread pools, kernel caches) are not the step's
        for p in params: p.grad.zero_()
        gc.collect(); sync()
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(); base = torch.cuda.memory_allocated()
            out = step(); sync(); res["peak"] = torch.cuda.max_memory_allocated() - base
        else:
            ok = reset_peak_rss(); base = rss_now()
            out = step(); res["peak"] = peak_rss(ok) - base
            res["peak_method"] = "VmHWM" if ok else "ru_maxrss"
        logits, pairs, loss, gfmap = out
        grads = {n: p.grad.detach().cpu() for n, p in model.named_parameters() if p.requires_grad}
        torch.save(dict(logits=logits.cpu(), pairs=pairs.cpu(), loss=loss.cpu(), fmap_grad=gfmap.cpu(), grads=grads),
                   Path(a._dir)/f"{a._worker}.pt")
    else:
        from torch.utils.flop_counter import FlopCounterMode
        with FlopCounterMode(display=False) as fc: step()  # doubles as the warm-up step
        res["flops"] = fc.get_total_flops()
        times = []
        for _ in range(a.steps):
            sync(); t0 = time.perf_counter(); step(); sync(); times.append(time.perf_counter() - t0)
        res["time"] = statistics.median(times)
    print("RESULT " + json.dumps(res))


def run_worker(a, side, task, tmp):
    cmd = [sys.executable, __file__, "--_worker", side, "--_task", task, "--_dir", str(tmp), "--batch", str(a.batch),
           "--classes", str(a.classes), "--steps", str(a.steps), "--device", a.device, "--threads", str(a.threads)]
    if a.reference: cmd += ["--reference", str(a.reference)]
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), MKL_NUM_THREADS=str(a.threads))
    if task == "memory":  # fixed mmap threshold: freed tensors go back to the OS, so the resident set tracks live memory
        env.update(MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if p.returncode: sys.exit(f"{side} {task} worker failed:\n{p.stderr[-4000:]}")
    return json.loads(next(l for l in p.stdout.splitlines() if l.startswith("RESULT "))[len("RESULT "):])


# ---------------------------------------------------------------------------------------------- main

def matmul_rate(device, n=(640, 2048, 3072), repeats=5):
    "GFLOP/s of a plain torch.matmul the size of the GNN's gate GEMM (B*C x 2D @ 2D x 3D)."
    dev = torch.device(device)
    x, w = torch.randn(n[0], n[1], device=dev), torch.randn(n[1], n[2], device=dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    torch.matmul(x, w); times = []
    for _ in range(repeats):
        sync(); t0 = time.perf_counter(); torch.matmul(x, w); sync(); times.append(time.perf_counter() - t0)
    return 2*n[0]*n[1]*n[2]/statistics.median(times)/1e9


def busy_cpu_seconds():
    "CPU-seconds the whole machine spent busy since boot (Linux /proc/stat), or None."
    try:
        with open("/proc/stat") as f: v = [int(x) for x in f.readline().split()[1:9]]
        return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait
    except (OSError, ValueError): return None


def own_cpu_seconds():
    "CPU-seconds of this process and its finished workers."
    return sum(getattr(resource.getrusage(w), f) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
               for f in ("ru_utime", "ru_stime"))


def main(a):
    torch.set_num_threads(a.threads)
    sides = ["ours"] + (["official"] if a.reference else [])
    c, b = a.classes, a.batch
    print(f"SST head, one training step (forward + backward): batch {b}, {c} classes, feature map ({b}, {D}, 7, 7), "
          f"{c*(c - 1)//2} pairs, {a.threads} threads, {a.device}")
    busy0, own0, wall0 = busy_cpu_seconds(), own_cpu_seconds(), time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        data = make_inputs(b, c)
        if a.reference:  # the official initialisation; ours gets the same weights through mlrpl.compat
            torch.manual_seed(0)
            data["official_state"] = OfficialHead(import_official(a.reference), data["adj"], data["words"]).state_dict()
        torch.save(data, Path(tmp)/"data.pt")
        known = (data["target"] != 0).float().mean().item()
        print(f"targets: {known:.1%} known, {(data['target'] == 1).sum().item()} positives")
        mm = matmul_rate(a.device)
        print(f"torch.matmul (640x2048 @ 2048x3072): {mm:.1f} GFLOP/s")
        res = {}
        for side in sides:
            res[side] = {**run_worker(a, side, "memory", tmp), **run_worker(a, side, "time", tmp)}
            r = res[side]
            print(f"{side}: {r['time']:.3f} s/step, peak +{r['peak']/MB:.0f} MB, {r['flops']/1e9:.1f} GFLOP, "
                  f"{r['flops']/1e9/r['time']:.1f} GFLOP/s")
        print("(peak: above the inputs, weights and their gradients; GFLOP: matmul-class operations of forward + "
              "backward, torch.utils.flop_counter)")
        if busy0 is not None and a.device == "cpu":  # other processes on the machine skew the timings
            wall, other = time.perf_counter() - wall0, busy_cpu_seconds() - busy0 - (own_cpu_seconds() - own0)
            if other > 0.1*wall:
                print(f"warning: other processes used {other:.0f} CPU-s during these {wall:.0f} s: timings are contended")
        if not a.reference: return
        o, f = res["ours"], res["official"]
        print(f"time ratio: {o['time']/f['time']:.2f}x (target <= 0.7x)")
        print(f"memory ratio: {o['peak']/f['peak']:.2f}x (target <= 0.4x)")
        ro, rf = torch.load(Path(tmp)/"ours.pt"), torch.load(Path(tmp)/"official.pt")
        from mlrpl.compat import convert_official
        gf = convert_official(rf["grads"])
        dg = max((ro["grads"][k] - gf[k]).abs().max().item() for k in gf)
        g = max(v.abs().max().item() for v in gf.values())
        print(f"max |Δ loss|: {(ro['loss'] - rf['loss']).abs().item():.2e} (loss {rf['loss'].item():.4f})")
        print(f"max |Δ logits|: {(ro['logits'] - rf['logits']).abs().max().item():.2e}")
        print(f"max |Δ pair logits|: {(ro['pairs'] - rf['pairs']).abs().max().item():.2e}")
        print(f"max |Δ feature-map grad|: {(ro['fmap_grad'] - rf['fmap_grad']).abs().max().item():.2e}")
        print(f"max |Δ weight grad|: {dg:.2e} (largest |grad| {g:.2e})")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference", type=Path, help="checkout of the official HCP-MLR-PL code")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--classes", type=int, default=80)
    ap.add_argument("--steps", type=int, default=5, help="timed steps (median), after one warm-up step")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--_worker", help=argparse.SUPPRESS)
    ap.add_argument("--_task", help=argparse.SUPPRESS)
    ap.add_argument("--_dir", help=argparse.SUPPRESS)
    a = ap.parse_args()
    worker(a) if a._worker else main(a)
