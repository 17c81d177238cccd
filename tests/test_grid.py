"""A grid file's mistakes, each stopped before any run starts with one error naming the file and the key at fault."""
from pathlib import Path

import pytest

from mlrpl.core import project_root
from mlrpl.grid import GridError, load_grid

TRAIN_NB = project_root() / "nbs" / "experiments" / "train.ipynb"
SMOKE = project_root() / "grids" / "smoke.yaml"


def _grid(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "g.yaml"; p.write_text(f"notebook: {TRAIN_NB}\n" + text); return p


@pytest.mark.parametrize("text, message", [
    ("base: {known_props: 0.1}", "g.yaml: base sets 'known_props', which is not a parameter"),
    ("base: {known_props: 0.1}", "did you mean 'known_prop'?"),
    ("grid: {methd: [sst]}", "grid sets 'methd'"),
    ("variants: [{method: sst, ephocs: 2}]", "variants[0] sets 'ephocs'"),
    ("base: {epochs: two}", "g.yaml: base.epochs: epochs takes an int"),
    ("grid: {seed: 0}", "grid.seed must be a non-empty list"),
    ("base: {results_dir: /tmp/x}", "the sweep sets for each run"),
    ("base: {seed: 1}\ngrid: {seed: [0, 1]}", "seed is both a grid axis and set in base"),
    ("grids: {seed: [0]}", "unknown key 'grids'"),
    ("run_files: [params.json]", "run_files must list the file names a finished run holds, metrics.json among them"),
    ("run_files: [metrics.json, ../x.npz]", "run_files must list the file names"),
    ("name: my sweep", "name 'my sweep' must be a folder name"),
])
def test_a_grid_file_mistake_is_named(tmp_path, text, message):
    with pytest.raises(GridError) as e: load_grid(_grid(tmp_path, text))
    assert message in str(e.value)


def test_a_command_line_set_of_no_parameter_is_named():
    with pytest.raises(GridError, match="--set sets 'epoch'"): load_grid(SMOKE, sets={"epoch": 2})


def test_a_missing_grid_file_or_notebook_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="grid file"): load_grid(tmp_path / "none.yaml")
    (tmp_path / "nb.yaml").write_text("notebook: nowhere.ipynb\n")
    with pytest.raises(FileNotFoundError, match="notebook nowhere.ipynb not found"): load_grid(tmp_path / "nb.yaml")
