"""A training run with and without `mlrpl.kernels.ALLOCATOR_ENV` (glibc keeps its freed blocks), side by side.

    python bench/allocator.py [--methods clsl,sst] [--epochs 6] [--repeat 1]

Each run is the main grid's configuration of the method (grids/main.yaml: GarmentNet's cached features at 84 px, 10 %
known, seed 0, one thread) for `--epochs` epochs, in a fresh process started with or without the variables,
alternating; a warm-up epoch in the same process first builds the feature cache and imports everything. Prints
each run's seconds, the ratio with/without, and whether the test mAP is the same to the last digit (the allocator
never touches the arithmetic). The machine is shared: read the ratios of one invocation, not absolute times.
"""
import argparse, json, os, subprocess, sys, tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUN = r'''
import json, sys, time, yaml
from mlrpl.run import run, RunConfig
g = yaml.safe_load(open(sys.argv[1])); method, epochs, out = sys.argv[2], int(sys.argv[3]), sys.argv[4]
v = next(v for v in g["variants"] if v["method"] == method)
cfg = dict(g["base"], **v, known_prop=0.1, seed=0, threads=1, epochs=epochs, results_dir=out)
run(RunConfig(**{**cfg, "epochs": 1}), progress=False, overwrite=True)  # the cache, the imports
t = time.perf_counter(); res = run(RunConfig(**cfg), progress=False, overwrite=True)
print(json.dumps(dict(seconds=time.perf_counter() - t, map=res["test_mAP_last"])))
'''


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default="clsl,sst"); ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--repeat", type=int, default=1)
    a = ap.parse_args()
    sys.path.insert(0, str(ROOT)); from mlrpl.kernels import ALLOCATOR_ENV
    base = {k: v for k, v in os.environ.items() if k not in ALLOCATOR_ENV}
    with tempfile.TemporaryDirectory() as tmp:
        for m in a.methods.split(","):
            res = {"without": [], "with": []}
            for _ in range(a.repeat):
                for side, env in (("without", base), ("with", {**base, **ALLOCATOR_ENV})):
                    p = subprocess.run([sys.executable, "-c", RUN, str(ROOT / "grids" / "main.yaml"), m, str(a.epochs), str(Path(tmp) / m / side)],
                                       capture_output=True, text=True, env=env, cwd=ROOT)
                    if p.returncode: sys.exit(p.stderr[-3000:])
                    res[side].append(json.loads(p.stdout.strip().splitlines()[-1]))
            w, o = (sum(r["seconds"] for r in res[s]) / a.repeat for s in ("with", "without"))
            same = {r["map"] for r in res["with"] + res["without"]}
            print(f"{m}: without {o:.2f} s, with {w:.2f} s, ratio {w / o:.2f}; the same test mAP: {len(same) == 1} ({same.pop():.6f})")


if __name__ == "__main__":
    main()
