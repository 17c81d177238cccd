"""Wall time of a sweep whose runs each start a fresh kernel and of one whose workers keep theirs, side by side.

    python bench/sweep_kernels.py [--grid grids/ablations.yaml] [-j 2] [--data DIR]

Both sides run every run of the grid with `mlrpl sweep` (`--fresh-kernels` on one side), each into a fresh results
folder, after one run of the grid's first variant that builds the dataset and the feature cache they share (not timed).
`--data` is the data root ($MLRPL_DATA; default: the project's data/). Prints each side's wall time and time per
run, the ratio, and whether the two sides' metrics.json files are identical.
"""
import argparse, json, os, subprocess, sys, tempfile, time
from pathlib import Path

import yaml

root = Path(__file__).resolve().parent.parent


def sweep(spec: dict, results: Path, jobs: int, env: dict, *extra: str) -> float:
    grid = results.with_suffix(".yaml")
    grid.write_text(yaml.safe_dump(spec))
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", "import sys; from mlrpl.sweep import main; sys.exit(main())", "sweep", str(grid),
                        "-j", str(jobs), "--results", str(results), *extra], env=env, capture_output=True, text=True)
    if r.returncode: sys.exit(f"sweep {spec['name']} failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grid", default=str(root / "grids" / "ablations.yaml"))
    ap.add_argument("-j", "--jobs", type=int, default=2)
    ap.add_argument("--data", default=os.environ.get("MLRPL_DATA", str(root / "data")))
    a = ap.parse_args()
    from mlrpl.grid import expand, load_grid
    grid = Path(a.grid).resolve()
    spec = yaml.safe_load(grid.read_text())
    spec["notebook"] = str(load_grid(grid).notebook)  # the grid files below live elsewhere
    env = {**os.environ, "MLRPL_DATA": str(Path(a.data).resolve())}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        first = {**spec, "variants": spec.get("variants", [{}])[:1], "grid": {k: v[:1] for k, v in (spec.get("grid") or {}).items()}}
        sweep(first, tmp / "build", 1, env)
        times = {side: sweep(spec, tmp / side, a.jobs, env, *extra) for side, extra in (("fresh", ("--fresh-kernels",)), ("warm", ()))}
        runs = [j.run for j in expand(grid, results=tmp)]
        metrics = {side: [json.loads((tmp / side / spec["name"] / r / "metrics.json").read_text()) for r in runs] for side in times}
    n = len(runs)
    print(f"{n} runs of {grid.relative_to(root) if grid.is_relative_to(root) else grid}, {a.jobs} at a time")
    for side, t in times.items(): print(f"{side:5} kernels: {t:7.1f} s  ({t / n:.1f} s a run)")
    print(f"warm / fresh time ratio: {times['warm'] / times['fresh']:.2f}x; identical metrics.json: {metrics['fresh'] == metrics['warm']}")


if __name__ == "__main__":
    main()
