"""Where one training run's time goes, per method, on cached features at the main job's scale; and old vs new side by side.

    python bench/epoch_time.py [--methods bce,ssgrl,...] [--train 1500] [--test 1000] [--epochs 3] [--channels 128]
                               [--against REV] [--repeat 1] [--work /tmp/mlrpl-epoch-time]

The setup is the main job's shape: FashionScenes scenes (the digits source, `--train` / `--test` scenes), a frozen
trunk cached once with its mirrors, a (B, `--channels`, 7, 7) map at 224 px, a head of img_dim 128 / inter_dim 64 /
out_dim 128, batch 32, 10 classes, 10 % known, the validation slice and the test set evaluated every epoch, the
checkpoint written every epoch; every mechanism acts from epoch 1 (pseudo labels, prototypes, blending) as in
grids/main.yaml. The trunk is a fixed random stride-32 convolution (`--channels` out): training reads only its
cached output, so its weights do not matter to the time of a run; `--trunk lite0` caches EfficientNet-Lite0 cut at
bn2 (1280 channels, ImageNet weights) instead.

Each run is `mlrpl.run.run(RunConfig(..., threads=1))` in a fresh process with the sweep kernels' allocator settings
(`mlrpl.kernels.ALLOCATOR_ENV`; values set in the environment win), imports done before the clock starts, as in a
sweep worker's kept kernel, its phases timed with perf_counter by wrapping the functions that do them: setup
(backbone, datasets, mask, model with its label graph and embeddings, feature-cache look-up, trainer), each train
step's data / forward / loss / backward / optimizer and the trainer's bookkeeping around them, the per-epoch hooks
(feature passes, K-means), validation and test evaluation, history files, the checkpoint, and the run's final
predictions.npz, analysis.npz, per_class.csv and metrics.json. A table per method gives each phase's seconds and
share of the run.

With `--against REV` the same runs are made with the package as committed at REV (`git archive`, imported through
PYTHONPATH) and with the working tree (or the revision `--new`), alternating, `--repeat` times each; the tables put
old and new side by side with the ratio new/old of each phase, of wall and of CPU seconds (the machine is shared:
CPU seconds move less with the load than wall seconds; read ratios from one invocation, never absolute times across
invocations).
"""
import argparse, json, os, shutil, statistics, subprocess, sys, tempfile, time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("bce", "ssgrl", "sst", "hst", "sarb", "dsrb", "clsl")
OPTIONS = {  # every mechanism from epoch 1, as grids/main.yaml
    "sst": dict(options=dict(pseudo_start=1)),
    "hst": dict(options=dict(pseudo_start=1, prototype_every=1)),
    "sarb": dict(options=dict(blend_start=1, prototype_every=1)),
    "dsrb": dict(options=dict(blend_start=1, prototype_every=1)),
    "clsl": dict(embeddings="minilm", ema_decay=0.97, options=dict(ffn_dim=512, att_dim=256)),
}


# ---------------------------------------------------------------------------------------------- the set-up

def register_trunk(channels:int):
    "Register the backbone 'bench_random<channels>': a fixed random stride-32 convolution as the frozen trunk."
    import torch
    from torch import nn
    from mlrpl.backbones import BACKBONES, FeatureExtractor
    name = f"bench_random{channels}"
    def build(pretrained=None, out_dim:int=128, input_size:int=224):
        g = torch.Generator().manual_seed(channels)
        trunk = nn.Sequential(nn.Conv2d(3, channels, 32, stride=32), nn.ReLU())
        with torch.no_grad():
            for p in trunk.parameters(): p.copy_(torch.randn(p.shape, generator=g)*0.05)
        change = nn.Sequential(nn.Conv2d(channels, out_dim, 1, bias=False), nn.BatchNorm2d(out_dim))
        return FeatureExtractor(dict(trunk=trunk, change_channel=change), trunk=["trunk"], head=["change_channel"], name=name,
                                trunk_cut="conv", trunk_channels=channels, out_dim=out_dim, mean=(0.5,)*3, std=(0.5,)*3,
                                input_size=input_size)
    build.__qualname__ = name
    BACKBONES.register(name)(build)
    return name


def config(a, method:str, out:Path) -> dict:
    "The RunConfig of one measured run."
    trunk = dict(backbone="efficientnet_lite0", pretrained="imagenet", trunk_cut="bn2") if a.trunk == "lite0" else \
            dict(backbone=f"bench_random{a.channels}", pretrained="")
    return dict(dataset="fashionscenes", data_root="scenes", method=method, known_prop=0.1, seed=0, input_size=224,
                img_dim=128, inter_dim=64, out_dim=128, epochs=a.epochs, batch_size=32, lr=3e-4, step_size=a.epochs,
                threads=1, results_dir=str(out), **trunk, **OPTIONS.get(method, {}))


def prepare(a):
    "Scenes, feature caches and class vectors under the work folder, made once (so that runs measure steady state)."
    os.environ["MLRPL_DATA"] = str(a.work)
    from mlrpl.fashionscenes import write_fashion_scenes
    write_fashion_scenes(a.work/"scenes", n_train=a.train, n_val=a.test, cooc=0.8, seed=0, source="digits", overwrite=True)
    if a.trunk != "lite0": register_trunk(a.channels)
    from mlrpl.run import run
    for m in ("ssgrl", "clsl"):  # glove and minilm vectors; both caches
        with tempfile.TemporaryDirectory() as d:
            run(dict(config(a, m, Path(d)/"r"), epochs=1), progress=False)


# ---------------------------------------------------------------------------------------------- the clock

class Clock:
    "Inclusive wall and CPU seconds and calls per phase path; a phase's own time is its seconds less its children's."
    def __init__(self): self.secs, self.cpu, self.calls, self.stack = defaultdict(float), defaultdict(float), defaultdict(int), []

    @contextmanager
    def phase(self, name:str):
        self.stack.append(name)
        path = "/".join(self.stack)
        t, c = time.perf_counter(), time.process_time()
        try: yield
        finally:
            self.secs[path] += time.perf_counter() - t
            self.cpu[path] += time.process_time() - c
            self.calls[path] += 1
            self.stack.pop()

    def wrap(self, fn, name):
        "fn timed as phase `name` (a string, or a function of fn's arguments giving it)."
        def timed(*args, **kw):
            with self.phase(name(*args, **kw) if callable(name) else name): return fn(*args, **kw)
        timed.__wrapped__ = fn
        return timed

    def own(self) -> dict:
        "{path: (own wall seconds, own CPU seconds, calls)}."
        kids = lambda t, p: sum(v for q, v in t.items() if q.startswith(p + "/") and q.count("/") == p.count("/") + 1)
        return {p: (s - kids(self.secs, p), self.cpu[p] - kids(self.cpu, p), self.calls[p]) for p, s in self.secs.items()}


def instrument(clock:Clock):
    "Wrap the functions that do each phase of a run (only in this process; nothing in the package changes)."
    import torch
    import mlrpl.backbones, mlrpl.cst, mlrpl.run as R, mlrpl.trainer as T
    patch = lambda mod, name, phase: hasattr(mod, name) and setattr(mod, name, clock.wrap(getattr(mod, name), phase))
    patch(mlrpl.backbones, "get_backbone", "backbone")
    for name, phase in (("_image_datasets", "datasets + mask"), ("check_splits", "check splits"), ("build_model", "model"),
                        ("_model_inputs", "feature caches"), ("_write_json", "run files"), ("_env", "run files"),
                        ("analysis", "analysis")):
        patch(R, name, phase)
    patch(mlrpl.cst, "kmeans_prototypes", "kmeans")
    files = {"checkpoint.pt": "checkpoint", "predictions.npz": "write", "analysis.npz": "write", "history.csv": "history files",
             "history.json": "history files", "per_class.csv": "write", "metrics.json": "write"}
    for mod in (R, T):
        patch(mod, "write_atomic", lambda path, *a, **k: files.get(Path(path).name, "run files"))
    Trainer = T.Trainer
    patch(Trainer, "train_epoch", "train")
    patch(Trainer, "evaluate", lambda self, ds, known_only=False, raw=False, **kw: "eval val" if known_only else "eval test raw" if raw else "eval test")
    patch(Trainer, "predict", "predict")
    patch(Trainer, "finish", "finish")
    patch(Trainer, "fit", "fit")
    patch(Trainer, "_log", "log")
    patch(T, "StepContext", "step context")
    patch(torch.Tensor, "backward", "backward")
    for cls in (torch.optim.Adam, torch.optim.AdamW, torch.optim.SGD): patch(cls, "step", "optimizer")  # before any scheduler wraps it
    patch(torch.optim.Optimizer, "zero_grad", "optimizer")
    patch(torch.optim.lr_scheduler.LRScheduler, "step", "optimizer")
    loader = Trainer._loader
    def timed_loader(self, *a, **k):
        dl = loader(self, *a, **k)
        class Timed:
            def __len__(s): return len(dl)
            def __iter__(s):
                it = iter(dl)
                while True:
                    with clock.phase("data"):
                        try: item = next(it)
                        except StopIteration: return
                    yield item
        return Timed()
    Trainer._loader = timed_loader
    init = Trainer.__init__
    def timed_init(self, *a, **k):
        with clock.phase("trainer"): init(self, *a, **k)
        m = self.model
        m.forward, m.loss, m.epoch_start = clock.wrap(m.forward, "forward"), clock.wrap(m.loss, "loss"), clock.wrap(m.epoch_start, "epoch hook")
        if hasattr(m, "outputs"): m.outputs = clock.wrap(m.outputs, "forward")  # a prototype pass's partial forward
        if self.ema is not None:
            self.ema.update, self.ema.module.forward = clock.wrap(self.ema.update, "ema"), clock.wrap(self.ema.module.forward, "forward")
    Trainer.__init__ = timed_init


def child(a):
    "Measure one run in this process; print its phases as JSON."
    os.environ["MLRPL_DATA"] = str(a.work)
    import torch, sklearn.cluster, pandas  # noqa: F401  imported before the clock, as in a sweep worker's warm kernel
    import mlrpl.run, mlrpl.sarb, mlrpl.dsrb, mlrpl.clsl, mlrpl.metrics  # noqa: F401
    if a.trunk != "lite0": register_trunk(a.channels)
    clock = Clock()
    instrument(clock)
    with tempfile.TemporaryDirectory() as d:
        with clock.phase("run"): mlrpl.run.run(config(a, a.child, a.keep or Path(d)/"r"), progress=False)
    print("PHASES " + json.dumps(dict(own=clock.own(), wall=clock.secs["run"], cpu=clock.cpu["run"])))


# ---------------------------------------------------------------------------------------------- the tables

def label(path:str) -> str:
    "A phase path as a row: the run's own time is setup; a train step's own time is bookkeeping."
    parts = path.split("/")[1:]  # drop "run"
    parts = [p for i, p in enumerate(parts) if i == 0 or p != parts[i - 1]]  # optimizer/optimizer: a step calling its parent's
    if not parts: return "setup: other"
    if parts[0] != "fit": return ("setup: " if parts[0] not in ("predict", "analysis", "finish", "write") else "end: ") + "/".join(parts)
    rest = parts[1:]
    if not rest: return "fit: other (state dicts, scheduler)"
    if rest[0] == "train":
        return "train: " + ("bookkeeping" if len(rest) == 1 else "/".join(rest[1:]))
    return "/".join(rest)


GROUPS = ("setup", "data", "forward", "loss", "backward", "optimizer", "bookkeeping", "epoch hooks", "evaluation",
          "checkpoint+log", "end files")

def group(row:str) -> str:
    "The column of the summary a table row adds to."
    if row.startswith("setup:"): return "setup"
    if row.startswith("end:"): return "end files"
    if row.startswith("train: "):
        r = row[7:]
        return {"data": "data", "forward": "forward", "loss": "loss", "backward": "backward", "optimizer": "optimizer",
                "ema": "optimizer"}.get(r.split("/")[0], "bookkeeping")
    if row.startswith("epoch hook"): return "epoch hooks"
    if row.startswith("eval"): return "evaluation"
    return "checkpoint+log"  # checkpoint, log, history files, the epoch loop's own time


def collect(own:dict) -> dict:
    "{row: [wall s, CPU s]}."
    rows = defaultdict(lambda: [0.0, 0.0])
    for p, (s, c, _) in own.items():
        r = rows[label(p)]; r[0] += s; r[1] += c
    return rows


def measure(a, method:str, pythonpath:str|None) -> dict:
    sys.path.insert(0, str(ROOT)); from mlrpl.kernels import ALLOCATOR_ENV
    env = dict({**ALLOCATOR_ENV, **os.environ}, MLRPL_DATA=str(a.work), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")  # as a sweep's kernel
    if pythonpath: env["PYTHONPATH"] = pythonpath + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, __file__, "--child", method, "--work", str(a.work), "--epochs", str(a.epochs),
           "--channels", str(a.channels), "--trunk", a.trunk, "--train", str(a.train), "--test", str(a.test)]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    line = next((l for l in p.stdout.splitlines() if l.startswith("PHASES ")), None)
    if p.returncode or line is None: raise RuntimeError(f"{method} ({pythonpath or 'working tree'}) failed:\n{p.stderr[-3000:]}")
    res = json.loads(line[7:])
    return dict(rows=collect(res["own"]), wall=res["wall"], cpu=res["cpu"])


def median_rows(results:list[dict]) -> tuple[dict, float, float]:
    "({row: (median wall s, median CPU s)}, median run wall s, median run CPU s)."
    keys = sorted({k for r in results for k in r["rows"]})
    med = lambda i, k: statistics.median(r["rows"].get(k, [0.0, 0.0])[i] for r in results)
    return ({k: (med(0, k), med(1, k)) for k in keys}, statistics.median(r["wall"] for r in results),
            statistics.median(r["cpu"] for r in results))


def ratio(x:float, y:float) -> str: return f"{x/y:7.2f}" if y > 1e-4 else f"{'-':>7}"


def print_table(method:str, new:list[dict], old:list[dict]|None, a):
    rows, wall, cpu = median_rows(new)
    orows, owall, ocpu = median_rows(old) if old else ({}, None, None)
    print(f"\n{method}: {a.epochs} epochs, {a.train} / {a.test} scenes, run {wall:.2f} s wall, {cpu:.2f} s CPU"
          + (f" (old {owall:.2f} s wall, {ocpu:.2f} s CPU; new/old {wall/owall:.2f} wall, {cpu/ocpu:.2f} CPU)" if old else "")
          + f", median of {len(new)}")
    keys = sorted(set(rows) | set(orows), key=lambda k: -max(rows.get(k, (0, 0))[0], orows.get(k, (0, 0))[0]))
    print(f"  {'phase':44} {'new s':>8} {'share':>6}" + (f" {'old s':>8} {'share':>6} {'n/o wall':>8} {'n/o CPU':>7}" if old else ""))
    for k in keys:
        (s, c), (o, oc) = rows.get(k, (0.0, 0.0)), orows.get(k, (0.0, 0.0))
        if max(s, o) < 0.0005: continue
        line = f"  {k[:44]:44} {s:8.3f} {100*s/wall:5.1f}%"
        if old: line += f" {o:8.3f} {100*o/owall:5.1f}% {ratio(s, o):>8} {ratio(c, oc)}"
        print(line)


def old_tree(rev:str, where:Path) -> str:
    "The package as committed at `rev`, unpacked under `where`; returns the PYTHONPATH entry."
    shutil.rmtree(where, ignore_errors=True)  # never a stale tree of an earlier revision
    where.mkdir(parents=True)
    tar = subprocess.run(["git", "archive", rev, "mlrpl"], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(where)], input=tar, check=True)
    return str(where)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--train", type=int, default=1500, help="training scenes (the validation slice is 10 %% of them)")
    ap.add_argument("--test", type=int, default=1000, help="test scenes")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--channels", type=int, default=128, help="channels of the random trunk's cached map")
    ap.add_argument("--trunk", default="random", choices=("random", "lite0"))
    ap.add_argument("--against", default="", help="a git revision: measure its package too, side by side (old)")
    ap.add_argument("--new", default="", help="a git revision to measure as new instead of the working tree")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir())/"mlrpl-epoch-time")
    ap.add_argument("--child", default="", help=argparse.SUPPRESS)
    ap.add_argument("--keep", type=Path, default=None, help=argparse.SUPPRESS)  # the child's results folder (default: a temporary one)
    a = ap.parse_args()
    if a.child: return child(a)
    a.work.mkdir(parents=True, exist_ok=True)
    old = old_tree(a.against, a.work/"old"/a.against.replace("/", "_")) if a.against else None
    new = old_tree(a.new, a.work/"new"/a.new.replace("/", "_")) if a.new else None
    if new: sys.path.insert(0, new)  # the data and caches are made by the package measured as new
    prepare(a)
    print(f"bench/epoch_time.py: {a.trunk} trunk ({a.channels if a.trunk == 'random' else 1280} channels, 7×7 at 224 px), "
          f"1 thread a run" + (f"; old = {a.against}, new = {a.new or 'working tree'}, alternating" if old else ""))
    summary, groups = [], []
    for m in a.methods.split(","):
        new_r, old_r = [], []
        for _ in range(a.repeat):
            if old: old_r.append(measure(a, m, old))
            new_r.append(measure(a, m, new))
        print_table(m, new_r, old_r or None, a)
        summary.append((m, median_rows(new_r)[1:], median_rows(old_r)[1:] if old_r else None))
        groups.append((m, median_rows(new_r)))
    print(f"\nwall seconds a run by group ({'new' if old else 'this tree'}), and share of the run")
    print(f"  {'':6} {'run':>6} " + " ".join(f"{g[:11]:>11}" for g in GROUPS))
    for m, (rows, wall, _) in groups:
        tot = {g: sum(v[0] for k, v in rows.items() if group(k) == g) for g in GROUPS}
        print(f"  {m:6} {wall:6.2f} " + " ".join(f"{tot[g]:5.2f} {100*tot[g]/wall:3.0f}%" for g in GROUPS))
    print("\nseconds a run, wall and CPU" + (": old, new, new/old" if old else ""))
    for m, (n, nc), o in summary:
        print(f"  {m:6} " + (f"wall {o[0]:7.2f} {n:7.2f} {n/o[0]:5.2f}   CPU {o[1]:7.2f} {nc:7.2f} {nc/o[1]:5.2f}" if o else f"wall {n:7.2f}   CPU {nc:7.2f}"))


if __name__ == "__main__":
    main()
