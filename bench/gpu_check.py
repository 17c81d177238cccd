"""One prepared check of a GPU machine: the CUDA path of mlrpl (AMP, channels_last, CPU = CUDA, torchrun with NCCL,
resume) and the benchmarks beside the official modules, in one call of a few minutes.

    bash bench/gpu_check.sh [--dry-run] [--reference DIR] [--work DIR] [--keep]      (or `make gpu-check`)

bench/gpu_check.sh builds .venv first (`make venv`), then runs this file. The phases, each timed, each check an
assertion that prints `ok` or `FAIL` with what it found:

1. data: the COCO 2014 and VOC 2007 fixtures (`write_coco_fixture`, `write_voc_fixture`) and a small FashionScenes
   from the digits source, read back through `get_dataset`;
2. runs: one short `mlrpl.run.run` per method family (bce, ssgrl, sst, hst, sarb, dsrb, clsl) on CUDA with bf16
   AMP and channels_last (sst once more with fp16 and its gradient scaler, ssgrl on the COCO and VOC fixtures):
   finite losses and every run file written; the trainer's CUDA path (channels_last weights and activations, bf16
   under its autocast);
3. CPU = CUDA: short runs of every family in float64 (SGD; TF32 off) on both devices: weights, logits and metrics
   within a bound set by float64 rounding (derived above ATOL);
4. the same float64 runs under `torchrun --nproc_per_node 1` with the NCCL backend (DDP) equal the plain ones; a run
   stopped after its first epoch and resumed on CUDA equals the uninterrupted one;
5. bench: `bench/heads.py --device cuda` and a ResNet-101@448 SST training step, ours and the official modules
   side by side (images/s and peak GPU memory, as ratios), printed as one table.

It closes with one line `N passed, N failed` (exit status 1 on any failure). `--dry-run` shrinks every size and,
without a CUDA device, checks on the CPU what a CPU can (the short runs in float32, a float64 run, the same under
torchrun with gloo, resume, both benchmarks) and prints each CUDA check it skipped; `make test` runs it.
The official code is never part of the repository: its checkout comes from `--reference DIR` or $MLRPL_REFERENCE
(HCP-MLR-PL); without one the official column is skipped, saying so.
"""
import argparse, contextlib, gc, io, json, math, os, re, shutil, socket, statistics, subprocess, sys, tempfile, time, traceback
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = ("bce", "ssgrl", "sst", "hst", "sarb", "dsrb", "clsl")
NO_CUDA = "no CUDA device"


@dataclass(frozen=True)
class Sizes:
    train: int  # FashionScenes training scenes
    test: int  # and test scenes
    side: int  # image side fed to EfficientNet-Lite0 (128: a 4x4 map; 64: 2x2)
    img_dim: int  # channels of the backbone's map (inter_dim is half of it)
    batch: int
    epochs: int  # of the short runs; the mechanisms (pseudo labels, prototypes, blending) act in the last one
    exact: tuple  # the methods of the float64 runs (CPU = CUDA, torchrun = plain)
    exact_size: tuple  # their FashionScenes: training scenes, test scenes, image side, batch (float64 convolutions are slow on a CPU)
    resume: tuple  # the methods resumed after their first epoch (float64, on the exact runs' scenes)
    heads: tuple  # bench/heads.py: batch, classes, timed steps
    r101: tuple  # ResNet-101 step: side, batch, classes, timed steps


FULL = Sizes(train=96, test=48, side=128, img_dim=64, batch=16, epochs=2, exact=FAMILIES, exact_size=(32, 16, 64, 8),
             resume=("hst", "dsrb"), heads=(8, 80, 5), r101=(448, 8, 80, 5))
DRY = Sizes(train=16, test=8, side=64, img_dim=32, batch=8, epochs=1, exact=("ssgrl", "hst"), exact_size=(16, 8, 32, 8),
            resume=("ssgrl",), heads=(2, 4, 1), r101=(64, 2, 6, 1))


# ---------------------------------------------------------------------------------------------- reporting

class Report:
    "Each check runs, passes or fails with its message, and the next one runs; skipped checks are listed with why."
    def __init__(self): self.passed, self.failed, self.skipped = [], [], []

    def check(self, name, fn, *args, **kw):
        "Run `fn`; its return value is given back (None when it failed). A str return is printed as the finding."
        t0, said = time.perf_counter(), io.StringIO()
        try:
            with contextlib.redirect_stdout(said): res = fn(*args, **kw)
        except Exception as e:  # a failed check is reported, and the checks after it still run
            quiet(said.getvalue())
            self.failed.append(name)
            tb = "".join(traceback.format_exception(e)[-3:-1]).rstrip().replace("\n", "\n      ")
            where = "" if isinstance(e, AssertionError) else "\n      " + tb  # an assertion's message says it all
            print(f"FAIL  {name} ({time.perf_counter() - t0:.1f} s): {type(e).__name__}: {e}{where}", flush=True)
            return None
        quiet(said.getvalue())
        self.passed.append(name)
        found = res if isinstance(res, str) else res[0] if isinstance(res, tuple) and res and isinstance(res[0], str) else ""
        print(f"ok    {name} ({time.perf_counter() - t0:.1f} s){': ' + found if found else ''}", flush=True)
        return res

    def needs(self, name, *values):
        "Fail `name` without running it when a check it builds on failed; True when it can run."
        if all(v is not None for v in values): return True
        self.failed.append(name); print(f"FAIL  {name}: not run, a check it needs failed (above)", flush=True)
        return False

    def skip(self, name, why):
        self.skipped.append((name, why)); print(f"skip  {name}: {why}", flush=True)

    def close(self) -> int:
        for name, why in self.skipped: print(f"skipped: {name}: {why}")
        print(f"{len(self.passed)} passed, {len(self.failed)} failed")
        return 1 if self.failed else 0


def quiet(text: str):
    "Print what a check printed, indented, less pycocotools' two lines for each annotation file it reads."
    for line in text.splitlines():
        if line not in ("creating index...", "index created!"): print("      " + line, flush=True)


@contextlib.contextmanager
def phase(title):
    print(f"\n== {title}", flush=True)
    t0 = time.perf_counter()
    yield
    print(f"   phase {title.split(':')[0]}: {time.perf_counter() - t0:.1f} s", flush=True)


# ---------------------------------------------------------------------------------------------- 1. data

def write_data(work: Path, z: Sizes) -> dict:
    "The COCO and VOC fixtures and a small FashionScenes (digits), each read back by its registered loader."
    from mlrpl.data import get_dataset
    from mlrpl.fixtures import write_coco_fixture, write_voc_fixture, COCO_FIXTURE_LABELS
    from mlrpl.fashionscenes import write_fashion_scenes
    d = work/"data"
    coco, voc, scenes, exact = d/"coco", d/"voc2007", d/"fashionscenes", d/"fashionscenes-exact"
    for s in ("train2014", "val2014"): write_coco_fixture(coco, s)
    for s in ("trainval", "test"): write_voc_fixture(voc, s)
    write_fashion_scenes(scenes, n_train=z.train, n_val=z.test, source="digits")
    write_fashion_scenes(exact, n_train=z.exact_size[0], n_val=z.exact_size[1], source="digits")
    found = []
    for name, root, n_train, n_test in (("coco2014", coco, 4, 4), ("voc2007", voc, 4, 4), ("fashionscenes", scenes, z.train, z.test),
                                        ("fashionscenes", exact, *z.exact_size[:2])):
        tr, te = get_dataset(name, root, "train"), get_dataset(name, root, "test")
        assert (len(tr), len(te)) == (n_train, n_test), f"{name} at {root}: {len(tr)} / {len(te)} images, expected {n_train} / {n_test}"
        found.append(f"{root.name} {len(tr)}/{len(te)} images, {tr.num_classes} classes")
    assert (get_dataset("coco2014", coco, "train").labels == COCO_FIXTURE_LABELS).all(), "the COCO fixture's labels are not the expected ones"
    return "; ".join(found), dict(coco=coco, voc=voc, scenes=scenes, exact=exact)


# ---------------------------------------------------------------------------------------------- 2. runs

def options(method: str, z: Sizes, exact: bool = False) -> dict:
    "The method's switches for a short run: its mechanisms act in the last epoch (exact: no dropout, whose draws are the device's)."
    start = z.epochs - 1
    return {"sst": dict(pseudo_start=start), "hst": dict(pseudo_start=start, prototype_every=1),
            "sarb": dict(blend_start=start, prototype_every=1), "dsrb": dict(blend_start=start, prototype_every=1),
            "clsl": dict(num_heads=2, ffn_dim=2*z.img_dim, att_dim=16, **(dict(encoder_dropout=0.0, mlp_dropout=0.0) if exact else {})),
            }.get(method, {})


def run_config(method, root, z, device, amp, out, dataset="fashionscenes", **kw):
    "A short run's configuration: the trunk runs on every batch (no feature cache), so AMP and channels_last reach it."
    from mlrpl.run import RunConfig
    return RunConfig(**{**dict(dataset=dataset, data_root=str(root), method=method, known_prop=0.5, backbone="efficientnet_lite0",
                               pretrained="imagenet", input_size=z.side, use_cache=False, img_dim=z.img_dim, inter_dim=z.img_dim//2,
                               out_dim=z.img_dim, embeddings="minilm" if method == "clsl" else "glove", epochs=z.epochs,
                               batch_size=z.batch, lr=1e-4, val_fraction=0.2, device=device, amp=amp, results_dir=str(out),
                               options=options(method, z)), **kw})


def check_run(cfg) -> str:
    "One run(): finite losses, a finite test mAP, every run file written, the device and AMP it was given."
    from mlrpl.run import RUN_FILES, run
    summary = run(cfg, progress=False)
    out = Path(cfg.results_dir)
    missing = [f for f in RUN_FILES if not (out/f).is_file()]
    assert not missing, f"{out} lacks {', '.join(missing)}"
    hist = json.loads((out/"history.json").read_text())
    losses = {k: v for h in hist for k, v in h.items() if k.startswith("train_")}
    bad = [f"epoch {h['epoch']} {k}={v}" for h in hist for k, v in h.items() if k.startswith("train_") and not math.isfinite(v)]
    assert losses and not bad, f"{out}/history.json: {'non-finite losses ' + ', '.join(bad) if bad else 'no training loss logged'}"
    assert len(hist) == cfg.epochs and math.isfinite(summary["test_mAP_last"]), f"{out}: {len(hist)} epochs, test mAP {summary['test_mAP_last']}"
    import numpy as np
    with np.load(out/"predictions.npz") as p: assert np.isfinite(p["logits"]).all(), f"{out}/predictions.npz holds non-finite logits"
    env, params = (json.loads((out/f).read_text()) for f in ("env.json", "params.json"))
    assert env["device"].startswith(cfg.device) and params["amp"] == cfg.amp, \
        f"{out}: env.json device {env['device']}, params.json amp {params['amp']}"
    return f"test mAP {summary['test_mAP_last']:.3f}, last train_loss {hist[-1].get('train_loss', float('nan')):.4f}, {len(RUN_FILES)} run files"


def check_cuda_path(scenes, z) -> str:
    "The trainer on CUDA with amp='bf16': weights and activations channels_last, activations bf16 under its autocast."
    import torch
    from torch import nn
    from mlrpl.trainer import Trainer, TrainConfig
    model, train, test = build("hst", scenes, z, exact=False)
    t = Trainer(model, train, test, TrainConfig(epochs=1, batch_size=z.batch, amp="bf16", device="cuda", checkpoint=False, progress=False))
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.weight.shape[-1] > 1]
    assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs), "conv weights are not channels_last"
    seen = []
    h = convs[-1].register_forward_hook(lambda m, i, o: seen.append((o.dtype, o.is_contiguous(memory_format=torch.channels_last))))
    try: t.predict(test)
    finally: h.remove()
    assert seen and all(s == (torch.bfloat16, True) for s in seen), f"the last 3x3 conv gave {set(seen)}, expected bf16 channels_last"
    return f"{len(convs)} spatial convs channels_last; their activations bf16, channels_last in {len(seen)} batches"


# ---------------------------------------------------------------------------------------------- 3./4. exact runs

# CPU = CUDA, torchrun = plain and resume = uninterrupted are checked in float64 with SGD (momentum 0.9, lr 1e-2),
# where the bound follows from float64 rounding alone. The two sides compute the same float64 operations and differ
# in the order of their sums (blocked GEMMs, cuDNN's algorithms, atomics): each result within n·u·Σ|terms| of the
# other, u = 2^-53 = 1.1e-16, n the longest reduction (<= 2^11 here: the 1x1 convolution that takes
# EfficientNet-Lite0's 1280 channels to img_dim), compounded over <= 64 layers and scaled by the loss terms (weights
# <= 10): a gradient entry differs by <= 64 · 2^11 · 1.1e-16 · 10 = 1.5e-10. SGD's update is linear in the gradient;
# with momentum 0.9 a difference in one gradient moves the weights by <= 10·lr·|Δg| over the run, so after S <= 12
# steps |Δw| <= 10 · 12 · 1e-2 · 1.5e-10 = 1.8e-10 (the steps' own feedback, lr·|H| << 1, adds little over 12
# steps). ATOL = 1e-9 leaves a factor 5 over that worst case; a real difference (another batch, a missed all-reduce,
# an epoch run twice) moves weights by ~lr·|g| >= 1e-6, and a float32 step (rounding 5e8 times coarser; also caught
# by dtype) far beyond ATOL. The logits are float32 (Trainer.predict) of float64 values within ~1e-9 of each other:
# at most one float32 rounding step apart (2^-23 relative), checked at 2^-22. The metrics follow from the logits'
# ranks, which such a difference changes only at exact ties: equal to 1e-9. (Adam, the methods' own optimiser,
# divides by sqrt(v) + 1e-8 and so magnifies rounding in near-zero gradients up to 1e8-fold: no bound from rounding
# alone; the CPU tests check its resume bit for bit.)
ATOL, LOGIT_RTOL, METRIC_ATOL = 1e-9, 2.0**-22, 1e-9


@contextlib.contextmanager
def float64():
    "Build and train in float64: tensors made without a dtype (ToTensor's images, a method's buffers) are float64."
    import torch
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try: yield
    finally: torch.set_default_dtype(old)


def build(method, scenes, z, exact=True):
    "The model of `method` on EfficientNet-Lite0 (ImageNet weights) and the FashionScenes splits, seeded (float64 when exact)."
    side = z.exact_size[2] if exact else z.side
    import torch
    from torchvision import transforms as T
    from mlrpl.backbones import LITE0_MEAN, LITE0_STD, get_backbone
    from mlrpl.core import set_seed
    from mlrpl.data import get_dataset
    from mlrpl.run import RunConfig, build_model
    tf = T.Compose([T.Resize((side, side)), T.ToTensor(), T.Normalize(LITE0_MEAN, LITE0_STD)])
    train = get_dataset("fashionscenes", scenes, "train", transform=tf, known_prop=0.5)
    test = get_dataset("fashionscenes", scenes, "test", transform=tf)
    cfg = RunConfig(method=method, backbone="efficientnet_lite0", pretrained="imagenet", input_size=side, img_dim=z.img_dim, inter_dim=z.img_dim//2, out_dim=z.img_dim,
                    embeddings="minilm" if method == "clsl" else "glove", options=options(method, z, exact=exact))
    set_seed(0)
    model = build_model(cfg, train, get_backbone("efficientnet_lite0", pretrained="imagenet", out_dim=z.img_dim))
    return (model.to(torch.float64) if exact else model), train, test


def train_exact(method, scenes, z, device, epochs=None, results_dir=None, resume=False, until=None, ddp=False) -> dict:
    "A float64 SGD run on `device`: its summary, final weights (CPU) and test logits."
    import torch
    from torch import nn
    from mlrpl.trainer import Trainer, TrainConfig
    with float64():
        model, train, test = build(method, scenes, z)
        cfg = TrainConfig(epochs=epochs or z.epochs, batch_size=z.exact_size[3], lr=1e-2, optimizer="sgd", val_fraction=0.0, device=device,
                          checkpoint=results_dir is not None, progress=False, seed=0)
        t = Trainer(model, train, test, cfg, results_dir=results_dir)
        if ddp:  # under torchrun the Trainer is in the process group at any world size (mlrpl.trainer.init_distributed),
            # so every gradient goes through DDP's all-reduce, and forward and loss through its wrapper
            assert t.distributed and isinstance(t.ddp, nn.parallel.DistributedDataParallel), \
                f"{method}: the Trainer under torchrun did not wrap its model in DDP"
        summary = t.fit(resume=resume, until=until)
        logits = t.predict(test)["logits"]
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    f32 = [k for k, v in state.items() if v.is_floating_point() and v.dtype != torch.float64]
    assert not f32, f"{method} on {device}: {', '.join(f32[:5])} not float64 after training"
    return dict(summary=summary, state=state, logits=logits, history=t.history)


def compare(a: dict, b: dict, what: str) -> str:
    "Weights within ATOL, logits within float32 rounding, metrics equal to METRIC_ATOL; the largest differences found."
    import torch
    assert a["state"].keys() == b["state"].keys(), f"{what}: the two models have different state keys"
    dw, worst = 0.0, ""
    for k, va in a["state"].items():
        vb = b["state"][k]
        if not va.is_floating_point():
            assert torch.equal(va, vb), f"{what}: {k} differs ({va.flatten()[:4].tolist()} vs {vb.flatten()[:4].tolist()})"
            continue
        d = (va - vb).abs().max().item() if va.numel() else 0.0
        if d > dw: dw, worst = d, k
    assert dw <= ATOL, f"{what}: weights differ by up to {dw:.2e} ({worst}), more than {ATOL:.0e}"
    la, lb = a["logits"], b["logits"]
    dl = (la - lb).abs()
    assert la.shape == lb.shape and bool((dl <= LOGIT_RTOL*la.abs() + ATOL).all()), f"{what}: logits differ by up to {dl.max().item():.2e}"
    sa, sb = a["summary"], b["summary"]
    off = {k: (sa[k], sb.get(k)) for k in sa if isinstance(sa[k], float) and math.isfinite(sa[k])
           and not (isinstance(sb.get(k), float) and abs(sa[k] - sb[k]) <= METRIC_ATOL)}
    assert not off, f"{what}: metrics differ: {off}"
    return (f"max |Δw| {dw:.1e}{' (bitwise equal)' if dw == 0 else ''}, max |Δlogit| {dl.max().item():.1e}, "
            f"test mAP {sa['test_mAP_last']:.4f} on both")


def check_devices(method, scenes, z) -> tuple:
    "The float64 run on the CPU and on CUDA agree; the CUDA run is what torchrun is compared with."
    cpu, gpu = train_exact(method, scenes, z, "cpu"), train_exact(method, scenes, z, "cuda")
    return compare(cpu, gpu, f"{method}: cpu vs cuda"), gpu


def check_exact(method, scenes, z) -> tuple:
    "The float64 run on the CPU: what torchrun is compared with when there is no CUDA device."
    r = train_exact(method, scenes, z, "cpu")
    assert math.isfinite(r["summary"]["test_mAP_last"]), f"{method}: test mAP {r['summary']['test_mAP_last']}"
    return f"test mAP {r['summary']['test_mAP_last']:.4f}, every weight float64", r


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]


def torchrun(scenes, z, device, work: Path, dry: bool) -> dict:
    "The float64 runs of every method in z.exact, in one `torchrun --nproc_per_node 1` (NCCL on CUDA, gloo on the CPU)."
    import torch
    out = work/f"torchrun-{device}.pt"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), __file__, "--_torchrun", str(out), "--_device", device, "--_scenes", str(scenes),
           *(["--dry-run"] if dry else [])]
    p = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"} if dry else None, capture_output=True, text=True, timeout=400)
    quiet(p.stdout)
    assert p.returncode == 0, f"torchrun exited {p.returncode}:\n{p.stderr[-3000:]}"
    res = torch.load(out, weights_only=True)
    want = "nccl" if device == "cuda" else "gloo"
    assert (res["backend"], res["world"]) == (want, 1), f"torchrun ran backend {res['backend']} with world size {res['world']}, expected {want}, 1"
    return f"backend {res['backend']}, world size 1", res


def torchrun_worker(a):
    "Inside torchrun: join the group, run each method (an error is recorded, the next one runs), all-reduce a checksum, save."
    import torch
    import torch.distributed as dist
    z = DRY if a.dry_run else FULL
    if a.dry_run: torch.set_num_threads(1)
    if a._device == "cuda": torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # as the plain runs it is compared with
    dist.init_process_group("nccl" if a._device == "cuda" else "gloo")
    runs = {}
    for m in z.exact:
        try: r = train_exact(m, Path(a._scenes), z, a._device, ddp=True)
        except Exception as e:  # reported by the parent as this method's failure
            runs[m] = dict(error=f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}"); continue
        w = torch.cat([v.flatten() for v in r["state"].values() if v.is_floating_point()]).to(a._device)
        s = w.clone(); dist.all_reduce(s)  # one process: the sum is the tensor itself
        runs[m] = dict(summary=r["summary"], state=r["state"], logits=r["logits"], all_reduce_equal=bool(torch.equal(s, w)))
    torch.save(dict(runs=runs, backend=dist.get_backend(), world=dist.get_world_size()), a._torchrun)
    dist.destroy_process_group()


def check_torchrun(method, launched, plain, device) -> str:
    r = launched["runs"].get(method)
    assert r is not None, f"the torchrun launch has no {method} run"
    assert "error" not in r, f"{method} under torchrun with DDP ({launched['backend']}): {r['error']}"
    assert r["all_reduce_equal"], f"{method}: an all_reduce over one process changed the weights"
    return compare(plain, r, f"{method}: torchrun vs plain on {device}")


def check_resume(method, scenes, z, device, work) -> str:
    "Stopped after epoch 1 and resumed from its checkpoint in a fresh model and trainer = run through."
    e = max(2, z.epochs)
    full = train_exact(method, scenes, z, device, epochs=e, results_dir=work/f"resume-{device}-{method}"/"full")
    cut = work/f"resume-{device}-{method}"/"cut"
    train_exact(method, scenes, z, device, epochs=e, results_dir=cut, until=1)
    assert not (cut/"metrics.json").exists(), f"{cut}: metrics.json written by a run stopped after epoch 1"
    resumed = train_exact(method, scenes, z, device, epochs=e, results_dir=cut, resume=True)
    epochs = [h["epoch"] for h in json.loads((cut/"history.json").read_text())]
    assert epochs == list(range(e)), f"{cut}/history.json has epochs {epochs}, expected 0..{e - 1} (an epoch run twice or lost)"
    return compare(full, resumed, f"{method}: resumed vs uninterrupted on {device}")


# ---------------------------------------------------------------------------------------------- 5. bench

def heads_bench(device, z, reference) -> tuple:
    "bench/heads.py at this size; its rows of the table, and the official side's agreement with ours."
    b, c, steps = z.heads
    cmd = [sys.executable, str(ROOT/"bench"/"heads.py"), "--device", device, "--batch", str(b), "--classes", str(c),
           "--steps", str(steps), "--threads", "1" if device == "cpu" else "2", *(["--reference", str(reference)] if reference else [])]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=400)
    print(p.stdout.strip())
    assert p.returncode == 0, f"bench/heads.py exited {p.returncode}:\n{p.stderr[-3000:]}"
    timed = re.finditer(r"^(ours|official): ([\d.e+-]+) s/step, peak \+(-?\d+) MB", p.stdout, re.M)
    rows = {("ours fp32" if m[1] == "ours" else m[1]): (b/float(m[2]), float(m[3])*2**20) for m in timed}  # images/s, bytes
    assert "ours fp32" in rows and (not reference or "official" in rows), \
        f"bench/heads.py printed no timing for {'ours and official' if reference else 'ours'}"
    if reference:  # the same weights and inputs: float32 sums of <= 3·2048 terms, each within 2048·6e-8 of the other
        d = {k: float(v) for k, v in re.findall(r"^max \|Δ (loss|logits)\|: ([\d.e+-]+)", p.stdout, re.M)}
        assert d.keys() == {"loss", "logits"} and max(d.values()) <= 1e-3, f"ours and official differ: {d}"
    return f"SST head, batch {b}, {c} classes", rows


def r101_bench(device, z, reference) -> tuple:
    "One SST training step on ResNet-101 (forward, losses, backward, Adam): ours fp32, official fp32, ours bf16 + channels_last."
    import numpy as np
    import torch
    side, b, c, steps = z.r101
    sys.path.insert(0, str(ROOT/"bench"))
    import heads
    data = heads.make_inputs(b, c)
    dev = torch.device(device)
    g = torch.Generator().manual_seed(0)
    x0, target = torch.randn(b, 3, side, side, generator=g).to(dev), data["target"].to(dev)
    sides = [("ours fp32", "ours", False)] + ([("official fp32", "official", False)] if reference else [])
    if device == "cuda": sides.append(("ours bf16 + channels_last", "ours", True))
    rows = {}
    for label, who, amp in sides:
        with (official_runs_here(device) if who == "official" else contextlib.nullcontext()):
            step = (official_step if who == "official" else ours_step)(data, dev, amp, reference)
            x = x0.contiguous(memory_format=torch.channels_last) if amp else x0
            sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
            step(x, target); sync()  # warm-up: the optimiser's state, cuDNN's plans
            if device == "cuda":
                gc.collect(); torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats(); base = torch.cuda.memory_allocated()
            step(x, target); sync()
            peak = torch.cuda.max_memory_allocated() - base if device == "cuda" else float("nan")
            times = []
            for _ in range(steps):
                t0 = time.perf_counter(); step(x, target); sync(); times.append(time.perf_counter() - t0)
            rows[label] = (b/statistics.median(times), peak)
            del step; gc.collect()
            if device == "cuda": torch.cuda.empty_cache()
    assert all(np.isfinite(v[0]) and v[0] > 0 for v in rows.values()), f"ResNet-101 step: {rows}"
    return f"ResNet-101@{side} SST step, batch {b}, {c} classes", rows


def ours_step(data, dev, amp, reference):
    import torch
    from mlrpl.backbones import get_backbone
    from mlrpl.methods import StepContext, get
    torch.manual_seed(0)
    model = get("sst", num_classes=data["words"].shape[0], backbone=get_backbone("resnet101", pretrained=None, out_dim=1024),
                adjacency=data["adj"].numpy(), word_embeddings=data["words"].numpy()).to(dev)
    if amp: model = model.to(memory_format=torch.channels_last)
    model.train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-5, weight_decay=5e-4)
    ctx = StepContext(epoch=1, step=0, steps=10, generator=torch.Generator().manual_seed(0))  # after the warm-up, before pseudo labels

    def step(x, target):
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            loss = model.loss(model(x), target, ctx)[0]
        loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)  # the official order: no gradients between steps
    return step


def official_step(data, dev, amp, reference):
    "The official SST model and its epoch-1 loss (BCE + 10 co-occurrence ASL + 0.05 contrastive), as SST.py's Train runs it."
    import torch
    sys.path.insert(0, str(ROOT/"bench"))
    import heads
    off = heads.import_official(reference)
    from model.SST import SST
    c = data["words"].shape[0]
    torch.manual_seed(0)
    model = SST(data["adj"].numpy(), data["words"].numpy(), classNum=c, wordFeatureDim=data["words"].shape[1]).to(dev)
    for p in model.backbone.parameters(): p.requires_grad = False
    for p in model.backbone.layer4.parameters(): p.requires_grad = True
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-5, weight_decay=5e-4)
    model.train(); model.backbone.eval(); model.backbone.layer4.train()
    bce = off.BCELoss(reduce=True, size_average=True)
    asl = off.intraAsymmetricLoss(c, gamma_neg=2, gamma_pos=1, reduce=True, size_average=True)
    inst = off.InstanceContrastiveLoss(data["target"].shape[0], reduce=True, size_average=True)

    def step(x, target):
        out, cooc, feat = model(x)
        model.updateFeature(feat, target, 100)
        loss = bce(out, target) + 10*asl(cooc, target) + 0.05*inst(feat, target)
        loss.backward(); opt.step(); opt.zero_grad()
    return step


@contextlib.contextmanager
def official_runs_here(device):
    "On the CPU, the official code's .cuda() calls are the identity while it runs."
    import torch
    from torch import nn
    if device == "cuda":
        yield; return
    saved = torch.Tensor.cuda, nn.Module.cuda
    torch.Tensor.cuda = lambda self, *a, **k: self
    nn.Module.cuda = lambda self, *a, **k: self
    try: yield
    finally: torch.Tensor.cuda, nn.Module.cuda = saved


def table(benches, device, reference_note):
    "One table: images/s and peak memory of each step, ours beside the official modules, with the ratios."
    mb = lambda v: "n/a" if not math.isfinite(v) else f"{v/2**20:.0f}"
    ratio = lambda a, b: "n/a" if not (math.isfinite(a) and math.isfinite(b) and b > 0) else f"{a/b:.2f}x"
    head = ("step", "ours", "images/s", "official images/s", "speed ours/official", "peak MB", "official peak MB", "memory ours/official")
    lines = []
    for title, rows in benches:
        off = rows.get("official") or rows.get("official fp32")
        for label, (ips, peak) in rows.items():
            if label.startswith("official"): continue
            lines.append((title, label, f"{ips:.1f}", f"{off[0]:.1f}" if off else "skipped", ratio(ips, off[0]) if off else "-",
                          mb(peak), mb(off[1]) if off else "skipped", ratio(peak, off[1]) if off else "-"))
    w = [max(len(r[i]) for r in [head, *lines]) for i in range(len(head))]
    print(f"\nbench on {device}: images/s of a training step; peak = memory a step allocates above the weights and the "
          "optimiser's state (GPU memory on CUDA; on the CPU the resident set's growth, which bench/heads.py measures and the "
          "ResNet-101 step does not); speed > 1x and memory < 1x favour ours"
          + (f"; official column skipped, {reference_note}" if reference_note else ""))
    for r in [head, tuple("-"*n for n in w), *lines]: print("| " + " | ".join(v.ljust(n) for v, n in zip(r, w)) + " |")


# ---------------------------------------------------------------------------------------------- main

def environment(cuda: bool) -> str:
    import torch
    info = [f"torch {torch.__version__}", f"CUDA build {torch.version.cuda}", f"{os.cpu_count()} CPUs"]
    if cuda:
        p = torch.cuda.get_device_properties(0)
        info += [f"{torch.cuda.device_count()} x {p.name} ({p.total_memory/2**30:.0f} GiB, sm_{p.major}{p.minor})",
                 f"cuDNN {torch.backends.cudnn.version()}", f"NCCL {'.'.join(map(str, torch.cuda.nccl.version()))}",
                 f"bf16 {'supported' if torch.cuda.is_bf16_supported() else 'NOT supported'}"]
    return ", ".join(info)


def require_cuda(cuda: bool) -> str:
    import torch
    assert cuda, (f"torch.cuda.is_available() is False (torch {torch.__version__}, built for CUDA {torch.version.cuda}); "
                  "on a machine without a GPU run `bash bench/gpu_check.sh --dry-run`")
    assert torch.cuda.is_bf16_supported(), f"{torch.cuda.get_device_name(0)} has no bf16: the AMP runs need amp='fp16'"
    return torch.cuda.get_device_name(0)


def main(a) -> int:
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="mlrpl-gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ["MLRPL_DATA"] = str(work/"data")  # the cached class vectors go there, not into the repository
    r, t_start = Report(), time.perf_counter()
    try: checks(a, work, r)
    finally:
        if not a.keep and not a.work: shutil.rmtree(work, ignore_errors=True)
    print(f"\ntotal: {time.perf_counter() - t_start:.1f} s of checks" + (f"; the datasets and runs are in {work}" if a.keep or a.work else ""))
    return r.close()


def checks(a, work: Path, r: Report):
    z = DRY if a.dry_run else FULL
    with phase("0: environment"):
        import torch
        cuda = torch.cuda.is_available()
        print("   " + environment(cuda) + f"; work folder {work}")
        if cuda or not a.dry_run: r.check("a CUDA device with bf16", require_cuda, cuda)
        if not cuda: torch.set_num_threads(1)  # a CPU shared with other work: one thread, as the runs' own default
    if not cuda and not a.dry_run: return
    dev, amp = ("cuda", "bf16") if cuda else ("cpu", "none")
    with phase("1: data"):
        res = r.check("write the COCO and VOC fixtures and FashionScenes (digits), read them back", write_data, work, z)
        data = res[1] if res else None
    with phase(f"2: short runs on {dev}" + (", bf16 AMP, channels_last" if cuda else " in float32 (the CUDA runs' stand-in)")):
        if not cuda: r.skip("the runs on CUDA with bf16 AMP and channels_last, fp16 with its scaler, the trainer's CUDA path", NO_CUDA)
        if r.needs("the short runs", data):
            for m in FAMILIES:
                r.check(f"run {m} on {dev} ({amp})", check_run, run_config(m, data["scenes"], z, dev, amp, work/"runs"/dev/m))
            if cuda: r.check("run sst on cuda (fp16)", check_run, run_config("sst", data["scenes"], z, dev, "fp16", work/"runs"/"fp16"/"sst"))
            for name, root in (("coco2014", data["coco"]), ("voc2007", data["voc"])):
                r.check(f"run ssgrl on the {name} fixture on {dev} ({amp})", check_run,
                        run_config("ssgrl", root, z, dev, amp, work/"runs"/dev/f"ssgrl-{name}", dataset=name, batch_size=2, val_fraction=0.0))
            if cuda: r.check("the trainer's CUDA path: channels_last, bf16 autocast", check_cuda_path, data["scenes"], z)
    plain, exact = {}, data["exact"] if data else None
    with phase("3: float64 runs" + (", CPU = CUDA (TF32 off)" if cuda else " on the CPU")):
        tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # TF32 rounds float32 only; off all the same
        if not cuda: r.skip("CPU = CUDA in float64", NO_CUDA)
        for m in z.exact:
            name = f"{m}: float64 run, CPU = CUDA" if cuda else f"{m}: float64 run on the CPU"
            if r.needs(name, exact):
                res = r.check(name, check_devices if cuda else check_exact, m, exact, z)
                if res: plain[m] = res[1]
    with phase("4: torchrun and resume" + (" on CUDA" if cuda else " on the CPU")):
        if not cuda: r.skip("torchrun --nproc_per_node 1 with NCCL = plain run, resume on CUDA", NO_CUDA)
        backend = "nccl" if cuda else "gloo"
        name = f"torchrun --nproc_per_node 1 ({backend}): {', '.join(z.exact)}"
        launched = r.check(name, torchrun, exact, z, dev, work, a.dry_run) if r.needs(name, exact) else None
        for m in z.exact:
            name = f"{m}: torchrun ({backend}, DDP) = plain run on {dev}"
            if r.needs(name, launched, plain.get(m)): r.check(name, check_torchrun, m, launched[1], plain[m], dev)
        for m in z.resume:
            name = f"{m}: resumed after epoch 1 = uninterrupted on {dev}"
            if r.needs(name, exact): r.check(name, check_resume, m, exact, z, dev, work)
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32  # the bench runs as torch's defaults run
    with phase(f"5: bench on {dev}"):
        note = "" if a.reference else "no checkout of HCP-MLR-PL given: pass --reference DIR or set MLRPL_REFERENCE"
        if note: r.skip("the official column of the bench", note)
        if not cuda: r.skip("the bench on CUDA (images/s, peak GPU memory)", NO_CUDA + "; the CPU runs it at tiny sizes")
        benches = [b for b in (r.check(f"bench/heads.py --device {dev}", heads_bench, dev, z, a.reference),
                               r.check(f"ResNet-101@{z.r101[0]} training step on {dev}", r101_bench, dev, z, a.reference)) if b]
        if benches: table(benches, dev, note)


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="tiny sizes; without CUDA, check on the CPU and list the CUDA checks skipped")
    ap.add_argument("--reference", type=Path, default=os.environ.get("MLRPL_REFERENCE") or None,
                    help="checkout of the official HCP-MLR-PL code for the bench's official column (default: $MLRPL_REFERENCE)")
    ap.add_argument("--work", help="folder for the datasets and runs (default: a temporary folder, removed at the end)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary work folder")
    for k in ("_torchrun", "_device", "_scenes"): ap.add_argument("--" + k, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.reference is not None:
        a.reference = Path(a.reference).expanduser().resolve()
        if not (a.reference/"model"/"SST.py").is_file():
            ap.error(f"--reference {a.reference} (or $MLRPL_REFERENCE) is not a checkout of HCP-MLR-PL: it has no model/SST.py")
    return a


if __name__ == "__main__":
    args = parse()
    if args._torchrun: torchrun_worker(args)
    else: sys.exit(main(args))
