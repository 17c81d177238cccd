"""Bad input fails with one clear error that names the file, parameter or class at fault."""
import json

import numpy as np
import pytest

from mlrpl.data import get_dataset, write_coco_fixture, write_voc_fixture
from mlrpl.fashionscenes import find_fashion_mnist
from mlrpl.masking import drop_labels, known_mask, save_mask


def test_missing_annotation_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"instances_val2014\.json does not exist"):
        get_dataset("coco2014", tmp_path, "test")
    with pytest.raises(FileNotFoundError, match=r"ImageSets/Main/trainval\.txt does not exist"):
        get_dataset("voc2007", tmp_path)


def test_missing_voc_xml(tmp_path):
    write_voc_fixture(tmp_path)
    (tmp_path / "Annotations" / "000007.xml").unlink()
    with pytest.raises(FileNotFoundError, match=r"000007\.xml does not exist \(listed in .*trainval\.txt\)"):
        get_dataset("voc2007", tmp_path)


def test_missing_image_names_file_and_annotation(tmp_path):
    write_coco_fixture(tmp_path)
    ds = get_dataset("coco2014", tmp_path)
    (tmp_path / "train2014" / "COCO_train2014_000000000042.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"COCO_train2014_000000000042\.jpg is missing \(listed in .*instances_train2014\.json\)"):
        ds[0]
    assert ds[1][0] == 1  # the other images still load


def test_unknown_voc_class(tmp_path):
    write_voc_fixture(tmp_path, objects={"000001": [("dog", 0)], "000002": [("unicorn", 0)]})
    with pytest.raises(ValueError, match=r"000002\.xml: unknown class name 'unicorn'"):
        get_dataset("voc2007", tmp_path)


def test_coco_annotation_with_unknown_category(tmp_path):
    write_coco_fixture(tmp_path)
    f = tmp_path / "annotations" / "instances_train2014.json"
    d = json.loads(f.read_text()); d["annotations"][0]["category_id"] = 55; f.write_text(json.dumps(d))
    with pytest.raises(ValueError, match=r"instances_train2014\.json: an annotation names unknown image or category id 55"):
        get_dataset("coco2014", tmp_path)


def test_mask_shape_mismatch(tmp_path):
    y = np.where(np.random.default_rng(0).random((10, 4)) < 0.5, 1, -1)
    f = save_mask(tmp_path / "m.npz", known_mask(y, 0.5), "entry", 0.5, 0, "toy")
    with pytest.raises(ValueError, match=r"m\.npz holds a \(10, 4\) mask but the labels are \(10, 5\)"):
        drop_labels(np.ones((10, 5)), None, scheme="file", mask_file=f)
    write_coco_fixture(tmp_path / "coco")
    with pytest.raises(ValueError, match=r"holds a \(10, 4\) mask but the labels are \(4, 4\)"):
        get_dataset("coco2014", tmp_path / "coco", mask_scheme="file", mask_file=f)


@pytest.mark.parametrize("p", [0, -0.1, 1.01, float("nan"), None])
def test_known_prop_outside_unit_interval(p):
    with pytest.raises(ValueError, match="known_prop must be in \\(0, 1\\]"):
        drop_labels(np.ones((3, 2)), p)


def test_labels_outside_the_encoding():
    with pytest.raises(ValueError, match=r"entry \(1, 0\) is 2"):
        drop_labels(np.array([[1, -1], [2, 1]]), 0.5)


def test_fashion_mnist_missing_says_how_to_get_it(tmp_path, monkeypatch):
    import mlrpl.fashionscenes as fs
    monkeypatch.setenv("MLRPL_DATA", str(tmp_path))
    monkeypatch.setattr(fs, "SYSTEM_FASHION_MNIST", tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        find_fashion_mnist(download=False)
