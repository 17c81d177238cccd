"""The scores SST's and HST's pseudo labels are drawn from, measured on finished runs: IST's intra-image score S
and CST's similarity to the class's queue (SST) or prototypes (HST), over the training scenes with the run's final
weights, for the unknown entries (split by the hidden truth, which the method never sees) and the known ones.
For each margin, how many unknown entries it passes and how precise they are, and what a rule that reads only the
known entries (the share of known entries above the margin that are positive) would choose.

    python bench/pseudo_scores.py runs/main/fashionscenes/sst/p0.1-s0 runs/main/fashionscenes/hst/p0.1-s0
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from mlrpl.ist import intra_scores
from mlrpl.losses import prototype_similarity
from mlrpl.run import RunConfig, prepare
from mlrpl.trainer import _read_checkpoint

MARGINS = (0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.55, 0.5, 0.4, 0.3)


@torch.no_grad()
def scores(run_dir: Path) -> dict:
    "IST and CST scores of every training entry, with the partial and full labels."
    cfg = RunConfig(**json.loads((run_dir / "params.json").read_text()))
    if cfg.method not in ("sst", "hst"): raise SystemExit(f"{run_dir}: a {cfg.method} run; this reads sst and hst runs")
    torch.set_num_threads(cfg.threads)
    r = prepare(cfg)  # as the run built it; `val_view`: every training scene, unaugmented
    model, view = r.model, r.val_view
    model.load_state_dict(_read_checkpoint(run_dir / "checkpoint.pt")["model"])
    model.eval()
    ist, cst, partial, full = [], [], [], []
    loader = torch.utils.data.DataLoader(view, batch_size=64)
    for _, x, p, y in loader:
        out = model(x)
        ist.append(intra_scores(out["cooc"], p).clamp(-1, 1))
        if cfg.method == "sst": cst.append(model.queue.similarity(out["features"]))
        else: cst.append(prototype_similarity(out["features"], model.prototypes, model.prototype_mask))
        partial.append(p); full.append(y)
    cat = lambda xs: torch.cat(xs).numpy()
    extra = dict(theta_intra=float(model.theta_intra), theta_inter=float(model.theta_inter)) if cfg.method == "hst" else {}
    return dict(cfg=cfg, ist=cat(ist), cst=cat(cst), partial=cat(partial), full=cat(full), **extra)


def report(name: str, s: np.ndarray, partial: np.ndarray, full: np.ndarray) -> list[str]:
    unknown, pos = partial == 0, full > 0
    u_pos, u_neg = s[unknown & pos], s[unknown & ~pos]
    k_pos, k_neg = s[partial > 0], s[partial < 0]
    q = lambda v: " / ".join(f"{np.quantile(v, p):.2f}" for p in (0.5, 0.9, 0.99)) if len(v) else "-"
    lines = [f"  {name}: unknown positives {len(u_pos):,} (median / 90% / 99%: {q(u_pos)}), unknown negatives {len(u_neg):,} ({q(u_neg)}); "
             f"known positives {len(k_pos):,} ({q(k_pos)}), known negatives {len(k_neg):,} ({q(k_neg)}); max over unknown entries {s[unknown].max():.2f}",
             f"  {'margin':>6} {'unknown passed':>14} {'precision':>9} {'recall':>6} {'known passed':>12} {'known share positive':>20}"]
    for m in MARGINS:
        up, un = (u_pos >= m).sum(), (u_neg >= m).sum()
        kp, kn = (k_pos >= m).sum(), (k_neg >= m).sum()
        prec = f"{up / (up + un):.3f}" if up + un else "-"
        share = f"{kp / (kp + kn):.3f}" if kp + kn else "-"
        lines.append(f"  {m:>6.2f} {up + un:>14,} {prec:>9} {up / max(len(u_pos), 1):>6.2f} {kp + kn:>12,} {share:>20}")
    return lines


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path, help="finished sst or hst run folders (params.json, checkpoint.pt)")
    a = ap.parse_args()
    for d in a.runs:
        r = scores(d)
        c = r["cfg"]
        print(f"{d}: {c.method}, known_prop {c.known_prop}, seed {c.seed}, options {c.options}"
              + (f"; learned θ_intra {r['theta_intra']:.3f}, θ_inter {r['theta_inter']:.3f}" if "theta_intra" in r else ""))
        for name in ("ist", "cst"): print("\n".join(report(name.upper(), r[name], r["partial"], r["full"])))
    sys.exit(0)
