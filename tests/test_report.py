"""The paper notebooks render the committed fixture into the same bytes every time: twice into two folders, and
again after their outputs are deleted."""
import shutil
from pathlib import Path

import papermill as pm
import pytest

root = Path(__file__).resolve().parent.parent
paper = root / "nbs" / "paper"
NOTEBOOKS = {"main_table": ("tables_dir",), "ablations": ("tables_dir",), "figures": ("figures_dir",), "cooc": ("tables_dir", "figures_dir")}
EXPECTED = {"tables": {f"{n}.{x}" for n in ("main", "main_f1", "ablations", "cooc") for x in ("md", "tex", "csv")},
            "figures": {f"{n}.{x}" for n in ("map_vs_known", "pseudo_labels", "cooccurrence", "features_tsne", "attention", "cooc")
                        for x in ("png", "pdf")}}


def render(out: Path):
    "Execute every paper notebook with its default results (the fixture), writing tables and figures under `out`."
    dirs = {"tables_dir": str(out / "tables"), "figures_dir": str(out / "figures")}
    (out / "executed").mkdir(parents=True, exist_ok=True)
    def one(nb):
        pm.execute_notebook(paper / f"{nb}.ipynb", out / "executed" / f"{nb}.ipynb", parameters={k: dirs[k] for k in NOTEBOOKS[nb]},
                            cwd=str(paper), kernel_name="python3", progress_bar=False, log_output=False)
    for nb in NOTEBOOKS: one(nb)  # one after another: papermill's cwd= changes the process's directory while a kernel starts


def files(out: Path) -> dict:
    return {f"{kind}/{p.name}": p.read_bytes() for kind in ("tables", "figures") for p in sorted((out / kind).iterdir())}


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    out = tmp_path_factory.mktemp("a")
    render(out)
    return out


def test_paper_notebooks_write_every_table_and_figure(first):
    for kind, names in EXPECTED.items():
        assert {p.name for p in (first / kind).iterdir()} == names


def test_rendering_twice_gives_the_same_bytes(first, tmp_path):
    render(tmp_path)
    a, b = files(first), files(tmp_path)
    assert a.keys() == b.keys()
    assert [k for k in a if a[k] != b[k]] == []


def test_deleting_outputs_and_rendering_again_gives_the_same_bytes(first):
    before = files(first)
    for kind in ("tables", "figures", "executed"): shutil.rmtree(first / kind)
    render(first)
    after = files(first)
    assert after.keys() == before.keys()
    assert [k for k in after if after[k] != before[k]] == []
