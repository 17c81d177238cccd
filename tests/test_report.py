"""The paper notebooks render the committed fixture into the same bytes every time: twice into two folders, and
again after their outputs are deleted. The claims' statistics on hand-made runs whose verdicts are known, and each
figure of the mechanisms rendered from the fixture."""
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import papermill as pm
import pytest

from mlrpl import figures as FG
from mlrpl import tables as TB

root = Path(__file__).resolve().parent.parent
paper = root / "nbs" / "paper"
FIXTURE = root / "tests" / "fixtures" / "results"
DIGITS = FIXTURE / "fashionscenes_digits"
ANNOTATIONS = FIXTURE / "annotations" / "fashionscenes-digits" / "instances_val.json"
NOTEBOOKS = {"main_table": ("tables_dir",), "ablations": ("tables_dir",), "figures": ("figures_dir",), "cooc": ("tables_dir", "figures_dir"),
             "claims": ("tables_dir",)}
EXPECTED = {"tables": {f"{n}.{x}" for n in ("main", "main_f1", "ablations", "cooc", "claims", "mechanisms") for x in ("md", "tex", "csv")},
            "figures": {f"{n}.{x}" for n in ("map_vs_known", "pseudo_labels", "blending", "cooccurrence", "features_tsne", "attention", "cooc")
                        for x in ("png", "pdf")}}


_F, _DIGITS = "tests/fixtures/results", "fashionscenes_digits"  # relative to the project, as the notebooks take them
PAPER_FIXTURE = {"main_table": dict(results=_F, dataset=_DIGITS), "ablations": dict(results=_F, dataset=_DIGITS), "cooc": dict(results=_F),
           "figures": dict(results=_F, dataset=_DIGITS, annotations=f"{_F}/annotations/fashionscenes-digits/instances_val.json"),
           "claims": dict(results=_F, cooc_results=_F, dataset=_DIGITS)}


def render(out: Path):
    "Execute every paper notebook on the fixture, writing tables and figures under `out`."
    dirs = {"tables_dir": str(out / "tables"), "figures_dir": str(out / "figures")}
    (out / "executed").mkdir(parents=True, exist_ok=True)
    def one(nb):
        pm.execute_notebook(paper / f"{nb}.ipynb", out / "executed" / f"{nb}.ipynb", parameters={**PAPER_FIXTURE[nb], **{k: dirs[k] for k in NOTEBOOKS[nb]}},
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


def test_every_table_and_figure_is_captioned(first):
    "The Markdown tables open with a caption that names the schedule and the seeds; the figures' titles do too (executed notebooks)."
    for name in ("main", "main_f1", "ablations", "cooc", "claims", "mechanisms"):
        caption = (first / "tables" / f"{name}.md").read_text().split("\n\n")[0]
        assert "4 epochs, efficientnet_lite0 (random init), 128 px" in caption and "seeds: 10%:" in caption, (name, caption)
    claims = pd.read_csv(first / "tables" / "claims.csv", keep_default_na=False)
    assert len(claims) == len(TB.CLAIMED) + 2 + len(TB.ABLATIONS) + 1 + len(TB.CLAIMED)
    assert set(claims.verdict) <= set(TB.VERDICTS) and "not run" in set(claims.verdict)  # the fixture leaves hst's, dsrb's and clsl's variants out


# The claims on hand-made runs: seeds 0, 1, 2 at 10 % known, one seed at 90 %; ssgrl at 60 + seed.
GAINS = {"sst": [3.0, 3.5, 2.5],  # holds, and meets the target (mean 3 ≥ 2 points, > 2 · 0.5)
         "hst": [-3.0, -3.2, -2.8],  # contradicted
         "sarb": [1.0, -1.0, 2.0],  # not at this scale
         "clsl": [1.5, 1.6, 1.4]}  # holds, but below the 2-point target; dsrb: no run at all


def hand_made() -> pd.DataFrame:
    rows = []
    def run(label, p, seed, value, method=None):
        rows.append(dict(dataset="fashionscenes", method=method or label.split(":")[0], label=label, known_prop=p, seed=seed, map=value,
                         options="{}", mask_scheme="entry", cooc=np.nan, data_root="fashionscenes-2k", backbone="efficientnet_lite0",
                         pretrained="imagenet", input_size=224, epochs=10, run_dir=f"runs/{label}/p{p}-s{seed}"))
    for s in (0, 1, 2):
        run("ssgrl", 0.1, s, 60.0 + s)
        for m, g in GAINS.items(): run(m, 0.1, s, 60.0 + s + g[s])
        run("sst: CST only", 0.1, s, 60.0 + s + 1.0)  # IST adds 2.0, 2.5, 1.5 to sst: holds
    run("ssgrl", 0.9, 0, 80.0); run("sst", 0.9, 0, 80.5)  # sst's gain 3.0 ± 0.5 at 10 % against 0.5 at 90 %
    return pd.DataFrame(rows)


def hand_made_cooc() -> pd.DataFrame:
    rows = []
    for c, ist in ((0.0, [0.0, 0.2, -0.2]), (0.5, [1.0, 1.3, 0.8]), (1.0, [2.0, 2.1, 1.8])):  # IST's gain grows by 2 points per unit strength
        for s in (0, 1, 2):
            for label, v in (("ssgrl", 50.0 + s), ("sst: IST only", 50.0 + s + ist[s])):
                rows.append(dict(dataset="fashionscenes", method=label.split(":")[0], label=label, known_prop=0.1, seed=s, map=v, cooc=c,
                                 options="{}", mask_scheme="entry", data_root=f"fashionscenes-cooc{c:g}", backbone="efficientnet_lite0",
                                 pretrained="imagenet", input_size=224, epochs=10, run_dir=f"cooc/{c}/{label}/s{s}"))
    return pd.DataFrame(rows)


def test_claims_verdicts_on_known_differences():
    c = TB.claims(hand_made(), hand_made_cooc()).set_index("claim")
    assert len(c) == len(TB.CLAIMED) + 2 + len(TB.ABLATIONS) + 1 + len(TB.CLAIMED)  # every claim has a row
    beats = c.loc[[f"{m} beats ssgrl" for m in TB.CLAIMED]]
    assert beats.verdict.tolist() == ["holds", "contradicted", "not at this scale", "not run", "holds"]
    assert beats.target.tolist() == ["met", "not met", "not met", "not run", "not met"]
    sst = beats.loc["sst beats ssgrl"]
    assert (sst.n, sst.seeds) == (3, "0, 1, 2") and np.isclose(sst["mean"], 3.0) and np.isclose(sst["std"], 0.5)
    assert beats.loc["dsrb beats ssgrl", "note"] == "no run of 'dsrb' at 10% known"
    assert c.loc["hst ≥ sst", "verdict"] == "contradicted" and np.isclose(c.loc["hst ≥ sst", "mean"], -6.0)
    assert c.loc["dsrb ≥ sarb", "verdict"] == "not run"
    ist = c.loc["removing IST costs sst mAP"]
    assert ist.verdict == "holds" and np.isclose(ist["mean"], 2.0) and ist.difference == "sst − (sst: CST only)"
    assert c.loc["removing CST costs sst mAP", "note"] == "no run of 'sst: IST only' at 10% known"
    grow = c.loc["IST's gain over ssgrl grows with co-occurrence"]
    assert grow.verdict == "holds" and grow.n == 3 and np.isclose(grow["mean"], np.mean([2.0, 1.9, 2.0]))
    shrink = c.loc["sst's gain over ssgrl shrinks as more labels are known"]
    assert shrink.verdict == "holds" and np.isclose(shrink["mean"], 2.5) and np.isclose(shrink["std"], 0.5) and shrink.n == 3
    assert shrink.note.startswith("90%: 1 seed (0); its gain is set against each 10% seed's")
    assert c.loc["hst's gain over ssgrl shrinks as more labels are known", "verdict"] == "not run"  # no hst run at 90 %


def test_claims_keep_every_row_without_runs():
    base = hand_made()
    c = TB.claims(base[base.label == "ssgrl"])  # nothing but the baseline, and no co-occurrence experiment
    assert c.verdict.eq("not run").all() and c.note.str.len().gt(0).all()
    assert c.set_index("claim").loc["IST's gain over ssgrl grows with co-occurrence", "note"] == "no co-occurrence runs given"


def test_claims_refuse_bad_input():
    df = hand_made()
    with pytest.raises(ValueError, match="unknown metric 'mAP'"): TB.claims(df, metric="mAP")
    with pytest.raises(ValueError, match="claims takes the runs of one dataset"): TB.claims(pd.concat([df, df.assign(dataset="voc2007")]))
    with pytest.raises(ValueError, match="2 runs for"): TB.claims(pd.concat([df, df.iloc[:1].assign(run_dir="elsewhere")]))
    with pytest.raises(ValueError, match="map is NaN in runs/sst/p0.1-s1"): TB.claims(df.assign(map=np.where(df.run_dir == "runs/sst/p0.1-s1", np.nan, df["map"])))
    with pytest.raises(ValueError, match="runs without a co-occurrence strength"): TB.claims(df, hand_made_cooc().assign(cooc=np.nan))


def test_claims_table_formats_and_writes(tmp_path):
    c = TB.claims(hand_made(), hand_made_cooc())
    shown = TB.claims_table(c).set_index("claim")
    assert shown.loc["sst beats ssgrl", ["mean", "std", "n"]].tolist() == ["+3.0", "0.5", "3"]
    assert shown.loc["dsrb beats ssgrl", ["mean", "std", "n"]].tolist() == ["–", "–", "0"]
    caption = TB.claims_caption(hand_made(), hand_made_cooc())
    assert "holds if mean > 0 and mean > 2 std" in caption and "by ≥ 2 points" in caption and "fashionscenes-cooc0" in caption
    md = TB.save_table(TB.claims_table(c), "claims", tmp_path, csv=c, caption=caption)[0].read_text()
    assert md.startswith(caption + "\n\n| claim | difference |")


def runs_at_10(label: str) -> list[Path]:
    return sorted((DIGITS / label).glob("p0.1-s*"))


def test_pseudo_label_figure_averages_seeds_from_the_fixture():
    fig = FG.plot_pseudo_labels(runs_at_10("sst") + runs_at_10("hst") + runs_at_10("clsl"))
    lines = fig.axes[0].lines
    assert [l.get_label() for l in lines] == ["sst: CST (n=3)", "sst: IST (n=3)", "hst: CST (n=3)", "hst: IST (n=3)", "clsl: RECOVERED (n=3)"]
    assert len({(l.get_marker(), str(l.get_color())) for l in lines}) == len({l.get_marker() for l in lines}) == 5
    assert all(np.isfinite(l.get_ydata()).any() for l in fig.axes[2].lines)  # counts are defined every epoch
    assert "seeds: 10%: 3 seeds (0, 1, 2)" in fig.get_suptitle()


def test_blending_figure_names_missing_columns_and_draws_present_ones(tmp_path):
    fig = FG.plot_blending(runs_at_10("sarb") + runs_at_10("dsrb"))
    assert [len(ax.lines) for ax in fig.axes] == [4, 2, 2]  # the fixture's runs log their blended entries
    old = tmp_path / "old"; shutil.copytree(runs_at_10("sarb")[0], old)  # a run from before the counts were logged
    h = pd.read_csv(old / "history.csv"); h.drop(columns=[c for c in h if "blend_" in c]).to_csv(old / "history.csv", index=False)
    assert "blend_<kind>_entries" in FG.plot_blending([old]).axes[0].texts[0].get_text()
    tmp_path = tmp_path / "new"; tmp_path.mkdir()
    params = json.loads((DIGITS / "dsrb" / "p0.1-s0" / "params.json").read_text())
    for s in (0, 1, 2):
        d = tmp_path / f"s{s}"; d.mkdir()
        (d / "params.json").write_text(json.dumps({**params, "seed": s}))
        pd.DataFrame(dict(epoch=[0, 1], blend_iprb_entries=[0, 30 + s], train_blend_pprb_entries=[0.0, 4.0], train_alpha=[0.5, 0.4],
                          train_beta=[0.5, 0.6])).to_csv(d / "history.csv", index=False)
    fig = FG.plot_blending(sorted(tmp_path.iterdir()))
    assert sorted(l.get_label() for l in fig.axes[0].lines) == ["dsrb: IPRB entries (n=3)", "dsrb: PPRB entries per step (n=3)"]
    assert [len(ax.texts) for ax in fig.axes] == [0, 0, 0]
    mean = fig.axes[0].lines[0].get_ydata()
    assert np.allclose(mean, [0, 31])


def test_attention_figure_draws_boxes_and_the_share(tmp_path):
    run = DIGITS / "hst" / "p0.1-s0"
    share = FG.attention_share(run, ANNOTATIONS)
    fig = FG.plot_attention(run, annotations=ANNOTATIONS)
    assert FG.share_text(share) in fig.get_suptitle().replace("\n", " ")
    assert sum(len(ax.patches) for ax in fig.axes) > 0
    with pytest.raises(ValueError, match="relative to a working directory it does not record; pass annotations="): FG.plot_attention(run)
    # a file whose garments are not the run's test labels (another split's, say): refused by name, not drawn
    other = json.loads(ANNOTATIONS.read_text()); other["annotations"] = [a for a in other["annotations"] if a["image_id"] != other["images"][0]["id"]]
    (tmp_path / "other.json").write_text(json.dumps(other))
    with pytest.raises(ValueError, match="are not its labels"): FG.attention_share(run, tmp_path / "other.json")
    (tmp_path / "bad.json").write_text(json.dumps({"images": []}))
    with pytest.raises(ValueError, match="bad.json is not a COCO instances file"): FG.attention_share(run, tmp_path / "bad.json")
    clsl = DIGITS / "clsl" / "p0.1-s0"  # CLSL leaves per-pixel class assignment instead of attention
    assert FG.plot_attention(clsl, annotations=ANNOTATIONS).get_suptitle().startswith("Class assignment")


def test_map_and_cooc_figures_differ_by_marker():
    runs = TB.collect(FIXTURE)
    main = runs[(runs.dataset == "fashionscenes_digits") & (runs.label == runs.method)]
    fig = FG.plot_map_vs_known(main)
    assert len({c.lines[0].get_marker() for c in fig.axes[0].containers}) == main.label.nunique()
    gain = TB.cooc_gain(runs[runs.dataset == "fashionscenes"])
    fig = FG.plot_cooc_gain(gain)
    assert [c.lines[0].get_marker() for c in fig.axes[1].containers] == ["o", "^"]
    assert "seeds: 10%: 2 seeds (0, 1)" in fig.get_suptitle().replace("\n", " ")


def test_a_paper_notebook_reads_the_same_folders_from_any_working_directory(first, tmp_path):
    """Relative parameters are taken from the project's folder: papermill started elsewhere (here a scratch folder,
    as `papermill nbs/paper/main_table.ipynb out.ipynb` from the repository root would be) reads the same runs."""
    pm.execute_notebook(paper / "main_table.ipynb", tmp_path / "out.ipynb", cwd=str(tmp_path), kernel_name="python3",
                        parameters={**PAPER_FIXTURE["main_table"], "tables_dir": str(tmp_path / "t")}, progress_bar=False, log_output=False)
    assert (tmp_path / "t" / "main.md").read_bytes() == (first / "tables" / "main.md").read_bytes()
