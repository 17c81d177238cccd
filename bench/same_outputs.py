"""Check that a revision of the package and the working tree give bit-identical run files, method by method.

    python bench/same_outputs.py [--against HEAD] [--methods bce,ssgrl,...] [--train 200] [--test 100] [--epochs 3]

Each method runs once with the package as committed at `--against` and once with the working tree (or the revision
`--new`), each in a fresh
process at one thread (`bench/epoch_time.py`'s set-up, made small: every mechanism acts from epoch 1), and the two
results folders are compared: every array of predictions.npz and analysis.npz byte for byte, metrics.json and
per_class.csv exactly, history.json exactly except its wall-clock `seconds`, and every tensor of the final
checkpoint's model, EMA and optimiser state bit for bit. Exits 1 naming each difference.
"""
import argparse, json, subprocess, sys, tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import epoch_time as E  # noqa: E402


def run_one(a, method:str, out:Path, pythonpath:str|None):
    import os
    env = dict(os.environ, MLRPL_DATA=str(a.work), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    if pythonpath: env["PYTHONPATH"] = pythonpath + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, E.__file__, "--child", method, "--keep", str(out), "--work", str(a.work), "--epochs", str(a.epochs),
           "--channels", str(a.channels), "--trunk", a.trunk, "--train", str(a.train), "--test", str(a.test)]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=E.ROOT)
    if p.returncode: raise RuntimeError(f"{method} ({pythonpath or 'working tree'}) failed:\n{p.stderr[-3000:]}")


def tensors(obj, prefix=""):
    "Every tensor in a nested checkpoint structure, by its path."
    if torch.is_tensor(obj): yield prefix, obj
    elif isinstance(obj, dict):
        for k, v in obj.items(): yield from tensors(v, f"{prefix}/{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj): yield from tensors(v, f"{prefix}/{i}")


def same_json(x, y) -> bool:
    return json.dumps(x, sort_keys=True) == json.dumps(y, sort_keys=True)  # NaN == NaN, 0.1 != 0.1000001


def compare(old:Path, new:Path) -> list[str]:
    diffs = []
    for f in ("predictions.npz", "analysis.npz"):
        with np.load(old/f, allow_pickle=False) as x, np.load(new/f, allow_pickle=False) as y:
            if sorted(x.files) != sorted(y.files): diffs.append(f"{f}: arrays {sorted(x.files)} vs {sorted(y.files)}")
            for k in sorted(set(x.files) & set(y.files)):
                u, v = x[k], y[k]
                if u.dtype != v.dtype or u.shape != v.shape or u.tobytes() != v.tobytes():
                    diffs.append(f"{f}[{k}] differs" + (f" (max |d| {np.nanmax(np.abs(u - v)):.3g})" if u.shape == v.shape and u.dtype.kind == "f" else ""))
    for f in ("metrics.json", "per_class.csv"):
        if (old/f).read_bytes() != (new/f).read_bytes() and not (f.endswith(".json") and same_json(*(json.loads((d/f).read_text()) for d in (old, new)))):
            diffs.append(f"{f} differs")
    h = [[{k: v for k, v in r.items() if k != "seconds"} for r in json.loads((d/"history.json").read_text())] for d in (old, new)]
    if not same_json(*h): diffs.append("history.json differs (beyond seconds)")
    ck = [torch.load(d/"checkpoint.pt", map_location="cpu", weights_only=True) for d in (old, new)]
    for part in ("model", "ema", "optimizer"):
        tx, ty = (dict(tensors(c.get(part, {}))) for c in ck)
        if tx.keys() != ty.keys(): diffs.append(f"checkpoint {part}: other tensors"); continue
        bad = [k for k in tx if tx[k].dtype != ty[k].dtype or tx[k].shape != ty[k].shape or not torch.equal(tx[k], ty[k])]
        if bad: diffs.append(f"checkpoint {part}: {len(bad)} tensors differ, e.g. {bad[0]}")
    return diffs


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--against", default="HEAD", help="the git revision to compare the working tree with")
    ap.add_argument("--new", default="", help="a git revision to compare instead of the working tree")
    ap.add_argument("--methods", default=",".join(E.METHODS))
    ap.add_argument("--train", type=int, default=200)
    ap.add_argument("--test", type=int, default=100)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--channels", type=int, default=128)
    ap.add_argument("--trunk", default="random", choices=("random", "lite0"))
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir())/"mlrpl-same-outputs")
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    old = E.old_tree(a.against, a.work/"old"/a.against.replace("/", "_"))
    new = E.old_tree(a.new, a.work/"new"/a.new.replace("/", "_")) if a.new else None
    if new: sys.path.insert(0, new)  # the data and caches are made by the package compared as new
    E.prepare(a)
    bad = 0
    with tempfile.TemporaryDirectory() as d:
        for m in a.methods.split(","):
            o, n = Path(d)/m/"old", Path(d)/m/"new"
            run_one(a, m, o, old); run_one(a, m, n, new)
            diffs = compare(o, n)
            bad += bool(diffs)
            print(f"{m:6} {'identical' if not diffs else 'DIFFERENT: ' + '; '.join(diffs)}", flush=True)
    print(f"{a.against} vs {a.new or 'working tree'}: {len(a.methods.split(',')) - bad} of {len(a.methods.split(','))} methods bit-identical")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
