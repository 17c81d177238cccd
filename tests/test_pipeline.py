"""The whole pipeline on the tiny real-format fixtures of COCO 2014, VOC 2007, VG-200 and NUS-WIDE: a YAML grid →
`mlrpl sweep` (papermill runs of nbs/experiments/train.ipynb) → run folders → the paper notebook that renders the
main table. Only parameters change between datasets; nothing here is specific to FashionScenes."""
import json
import re
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from mlrpl.fixtures import write_coco_fixture, write_nuswide_fixture, write_vg_fixture, write_voc_fixture

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def fixture(name, root):
    if name == "coco2014":
        write_coco_fixture(root, "train2014"); write_coco_fixture(root, "val2014")
    elif name == "voc2007":
        write_voc_fixture(root, "trainval"); write_voc_fixture(root, "test")
    elif name == "vg200": write_vg_fixture(root)
    else: write_nuswide_fixture(root)
    return root


GRID = """name: pipeline
notebook: {notebook}
base:
  dataset: {dataset}
  data_root: {root}
  backbone: efficientnet_lite0
  pretrained: ""
  input_size: 64
  img_dim: 32
  inter_dim: 16
  out_dim: 32
  epochs: 1
  batch_size: 2
  val_fraction: 0.0
  embeddings: minilm
grid:
  known_prop: [0.5]
  seed: [0]
variants:
  - {{method: ssgrl}}
  - {{method: clsl, options: {{num_heads: 2, ffn_dim: 32, att_dim: 16}}}}
"""


def _bar_lines(executed) -> list[str]:
    "The saved notebook of a run: its run cell's outputs are its result and one line per progress bar, no refresh flood."
    cells = json.loads(executed.read_text())["cells"]
    (cell,) = [c for c in cells if "summary = run(cfg" in "".join(c["source"])]
    streams = "".join("".join(o["text"]) for o in cell["outputs"] if o["output_type"] == "stream")  # warnings may be there
    assert "\r" not in streams and "|" not in streams, streams  # but no bar's refresh
    return ["".join(o["data"]["text/plain"]) for o in cell["outputs"] if o["output_type"] == "display_data"]


@pytest.mark.parametrize("dataset", ["coco2014", "voc2007", "vg200", "nuswide"])
def test_pipeline_on_real_formats(dataset, tmp_path):
    data = fixture(dataset, tmp_path / "data" / dataset)
    grid = tmp_path / "grid.yaml"
    grid.write_text(GRID.format(notebook=ROOT / "nbs" / "experiments" / "train.ipynb", dataset=dataset, root=data))
    env = {**os.environ, "MLRPL_DATA": str(tmp_path / "data")}  # the feature cache goes there
    sweep = subprocess.run([str(BIN / "mlrpl"), "sweep", str(grid), "-j", "2", "--results", str(tmp_path / "runs")],
                           env=env, capture_output=True, text=True, timeout=900)
    assert sweep.returncode == 0, sweep.stdout[-3000:] + sweep.stderr[-3000:]
    runs = sorted((tmp_path / "runs" / "pipeline").glob("*/*/p0.5-s0"))
    assert [r.parent.name for r in runs] == ["clsl", "ssgrl"]
    for r in runs:
        assert {"params.json", "metrics.json", "history.csv", "per_class.csv", "predictions.npz", "env.json",
                "dataset.json", "analysis.npz", "train.ipynb"} <= {p.name for p in r.iterdir()}
        params, record = (json.loads((r / f).read_text()) for f in ("params.json", "env.json"))
        assert params["dataset"] == dataset and params["threads"] == record["threads"] == 1  # the notebook's default
        assert len(record["feature_caches"]) == 2  # the train and test caches it read, named in env.json
        bars = _bar_lines(r / "train.ipynb")
        assert all(re.fullmatch(r"(caching \w+ features of \S+|training \w+): \d+/\d+ (images|steps) in .*", b) for b in bars), bars
        assert sum(b.startswith("training ") for b in bars) == 1, bars  # one line for the whole training
    tables = tmp_path / "tables"
    out = subprocess.run([str(BIN / "papermill"), "--cwd", str(ROOT / "nbs" / "paper"), "-k", "python3", "--no-progress-bar",
                          str(ROOT / "nbs" / "paper" / "main_table.ipynb"), str(tmp_path / "main_table.ipynb"),
                          "-p", "results", str(tmp_path / "runs"), "-p", "tables_dir", str(tables), "-p", "dataset", dataset],
                         env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    main = pd.read_csv(tables / "main.csv")
    ours = main[(main.source == "ours") & (main.dataset == dataset)]
    assert sorted(ours.method) == ["clsl", "ssgrl"] and (ours.known_prop == 0.5).all()
