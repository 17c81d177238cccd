"""The GPU check's CPU dry run (`bash bench/gpu_check.sh --dry-run`), so that the script a GPU machine runs cannot rot:
on a machine without CUDA every CPU check passes and each CUDA check is listed as skipped, with why. With
$MLRPL_REFERENCE set (a checkout of HCP-MLR-PL) the official column of the bench runs too; without it, it is skipped
by name. A bad --reference is one error before any work."""
import os
import re
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "gpu_check.sh"
CUDA_SKIPS = ("the runs on CUDA with bf16 AMP and channels_last", "CPU = CUDA in float64",
              "torchrun --nproc_per_node 1 with NCCL = plain run, resume on CUDA", "the bench on CUDA")


def test_dry_run_passes_and_names_what_it_skipped(tmp_path):
    p = subprocess.run(["bash", str(SCRIPT), "--dry-run", "--work", str(tmp_path / "work")], cwd=ROOT,
                       capture_output=True, text=True, timeout=900)
    out = p.stdout
    tail = out[-6000:] + p.stderr[-3000:]
    last = out.strip().splitlines()[-1] if out.strip() else ""
    m = re.fullmatch(r"(\d+) passed, (\d+) failed", last)
    assert m and m[2] == "0" and int(m[1]) >= 15, tail
    assert p.returncode == 0, tail
    for phase in range(6): assert f"phase {phase}: " in out, f"phase {phase} is not timed\n{tail}"
    skipped = re.findall(r"^skipped: ([^:]+): (.+)$", out, re.M)
    if not torch.cuda.is_available():
        for name in CUDA_SKIPS:
            assert any(s.startswith(name) and "no CUDA device" in why for s, why in skipped), f"{name!r} not listed as skipped\n{tail}"
    reference = bool(os.environ.get("MLRPL_REFERENCE"))
    assert any(s == "the official column of the bench" for s, _ in skipped) != reference, tail
    assert bool(re.search(r"^\s*official: [\d.]+ s/step", out, re.M)) == reference, tail  # bench/heads.py's official side
    for row in ("| SST head, batch 2, 4 classes", "| ResNet-101@64 SST step"): assert row in out, f"no bench row {row!r}\n{tail}"
    assert len(list((tmp_path / "work" / "runs").glob("*/clsl/metrics.json"))) == 1  # --work keeps the run folders


def test_a_reference_that_is_not_hcp_mlr_pl_is_refused_before_any_work(tmp_path):
    p = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--dry-run", "--reference", str(tmp_path),
                        "--work", str(tmp_path / "work")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "is not a checkout of HCP-MLR-PL: it has no model/SST.py" in p.stderr, p.stderr
    assert str(tmp_path) in p.stderr and not (tmp_path / "work").exists()
