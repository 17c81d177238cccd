"mlrpl against fixtures computed by the official HCP-MLR-PL code (regenerate: tests/golden/make_golden.py)."
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from mlrpl.data import label_graph
from mlrpl.masking import drop_labels
from mlrpl.metrics import average_precision, mean_average_precision, threshold_metrics

GOLDEN = Path(__file__).parent/"golden"
KEYS = ("OP", "OR", "OF1", "CP", "CR", "CF1")  # the official tuple order


def load(name):
    with np.load(GOLDEN/f"{name}.npz") as z: return dict(z)

M = load("metrics")
CASES = sorted({k.split("_")[0] for k in M if k.startswith("c")})


def test_masking():
    g = load("masking")
    for p, official in zip(g["props"], g["partial"]):
        np.testing.assert_array_equal(drop_labels(g["labels"], p), official, err_msg=f"known_prop={p}")


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # guard=False: the official 0/0 rows
def test_label_graph():
    g = load("label_graph")
    nan_rows = np.isnan(g["graph"]).all(1)
    assert nan_rows[3] and (np.isnan(g["graph"]) == nan_rows[:, None]).all()
    # assert_allclose also requires the NaNs at the same places; A = N(i, j)/N(i, i) <= 1 of integer counts, one
    # float64 division on each side: within 1.1e-16, so 1e-12 leaves 1e4x
    np.testing.assert_allclose(label_graph(g["partial"], guard=False), g["graph"], rtol=0, atol=1e-12)
    guarded = label_graph(g["partial"])
    assert not np.isnan(guarded).any() and (guarded[nan_rows] == 0).all()
    np.testing.assert_allclose(guarded[~nan_rows], g["graph"][~nan_rows], rtol=0, atol=1e-12)


@pytest.mark.parametrize("case", CASES)
def test_map_voc2012(case):
    s, t = M[f"{case}_scores"], M[f"{case}_targets"]
    # both in float64 (NumPy): cumulative sums and a sum over <= 500 precisions <= 1, within 500·2.2e-16 = 1.1e-13
    # of each other's exact value: 1e-9 leaves 1e4x; the mAP is their mean
    np.testing.assert_allclose(average_precision(s, t), M[f"{case}_ap_voc"], rtol=0, atol=1e-9)
    assert mean_average_precision(s, t) == pytest.approx(float(M[f"{case}_map"]), rel=0, abs=1e-9)


@pytest.mark.parametrize("case", CASES)
def test_ap_meter(case):
    # The official meter sums its precisions in Python floats (float64) and stores each AP in a float32 tensor:
    # that rounding moves an AP <= 1 by at most 2^-25 = 3e-8; float64 sums of <= 500 terms add < 1.2e-13. 2^-24 bounds both.
    ours = average_precision(M[f"{case}_scores"], M[f"{case}_targets"], interpolation="none")
    np.testing.assert_allclose(ours, M[f"{case}_ap"], rtol=0, atol=2.0**-24)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("top_k, key", [(None, "overall"), (3, "top3")])
def test_threshold_metrics(case, top_k, key):
    ours = threshold_metrics(M[f"{case}_scores"], M[f"{case}_targets"], top_k=top_k)
    # ratios of integer counts and their means over 20 classes, in float64 on both sides: within 25·2.2e-16 of
    # each other; 1e-12 leaves > 100x (one count off moves a value by >= 1/(500·20) = 1e-4)
    np.testing.assert_allclose([ours[k] for k in KEYS], M[f"{case}_{key}"], rtol=0, atol=1e-12)


def test_map_voc2012_ties():
    s, t = M["tie_scores"], M["tie_targets"]
    assert any(np.unique(col).size < col.size for col in s.T)  # ties within a class
    # NumPy's default argsort is unstable and its tie order depends on the SIMD code path it picks
    if not (np.argsort(-s.T, axis=1) == M["tie_order"]).all():
        pytest.skip("this NumPy breaks ties differently from the machine that made the fixture")
    np.testing.assert_allclose(average_precision(s, t), M["tie_ap_voc"], rtol=0, atol=1e-9)  # as test_map_voc2012
    assert mean_average_precision(s, t) == pytest.approx(float(M["tie_map"]), rel=0, abs=1e-9)


def test_noninterpolated_ties_sklearn():
    s, t = M["tie_scores"], M["tie_targets"]
    expected = [average_precision_score(t[:, k] > 0, s[:, k]) for k in range(t.shape[1])]
    # both float64: sums of <= 500 terms <= 1, within 500·2.2e-16 = 1.1e-13 each; 1e-11 leaves > 40x
    np.testing.assert_allclose(average_precision(s, t, interpolation="none"), expected, rtol=0, atol=1e-11)


def test_clsl_mask_scheme_equals_the_official_clsl_mask():
    z = np.load(GOLDEN / "clsl_mask.npz")
    from mlrpl.masking import known_mask
    for p, want in zip(z["known_prop"], z["masks"]):
        np.testing.assert_array_equal(known_mask(z["labels"], float(p), "clsl", seed=0), want)
