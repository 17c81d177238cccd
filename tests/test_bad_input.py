"""Bad input fails with one clear error that names the file, parameter or class at fault."""
import json

import numpy as np
import pytest

from mlrpl.data import get_dataset
from mlrpl.fixtures import write_coco_fixture, write_voc_fixture
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


def test_embeddings_of_the_wrong_shape(tmp_path):
    from mlrpl.embeddings import class_embeddings
    np.save(tmp_path / "v.npy", np.ones((3, 8)))
    with pytest.raises(ValueError, match=r"v\.npy holds an array of shape \(3, 8\); expected \(2, D\), one row per class"):
        class_embeddings(["a", "b"], tmp_path / "v.npy")
    np.save(tmp_path / "v.npy", np.ones(2))
    with pytest.raises(ValueError, match=r"v\.npy holds an array of shape \(2,\); expected \(2, D\)"):
        class_embeddings(["a", "b"], tmp_path / "v.npy")
    with pytest.raises(FileNotFoundError, match=r"class-embedding file .*nope\.npy does not exist"):
        class_embeddings(["a"], tmp_path / "nope.npy")


def test_class_name_without_a_glove_vector():
    from mlrpl.embeddings import class_embeddings
    with pytest.raises(KeyError, match=r"class 'glorbnax': GloVe has no vector for \['glorbnax'\]; add an alias"):
        class_embeddings(["cat", "glorbnax"], cache=False)


# Nothing is executed from a data file: every torch.load of the package reads with weights_only=True, every np.load
# without pickles, and a file carrying a pickle payload is refused before the payload runs.

class _Payload:
    "Unpickling this object creates the file `marker` (as a hostile weights file could run any code)."
    def __init__(self, marker): self.marker = str(marker)
    def __reduce__(self): return (open, (self.marker, "w"))


def test_every_torch_load_is_weights_only_and_no_np_load_unpickles():
    import ast
    from pathlib import Path
    calls = []
    for f in sorted((Path(__file__).resolve().parent.parent / "mlrpl").glob("*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("load", "loads"):
                owner = ast.unparse(node.func.value)
                kw = {k.arg: ast.unparse(k.value) for k in node.keywords}
                calls.append((f.name, owner, kw))
                if owner == "torch": assert kw.get("weights_only") == "True", f"{f.name}: torch.load without weights_only=True"
                if owner in ("np", "numpy"): assert kw.get("allow_pickle", "False") == "False", f"{f.name}: np.load with allow_pickle"
                assert owner not in ("pickle", "dill", "joblib", "cloudpickle"), f"{f.name}: {owner}.{node.func.attr}"
    assert sum(o == "torch" for _, o, _ in calls) >= 2  # the weights reader and the checkpoint reader were seen


def test_pickle_payload_in_a_weights_file_is_refused_unrun(tmp_path):
    import torch
    from mlrpl.backbones import read_state_dict
    f = tmp_path / "weights.pt"
    torch.save({"fc.weight": torch.zeros(2, 2), "x": _Payload(tmp_path / "ran")}, f)
    with pytest.raises(ValueError, match=r"weights\.pt is not a PyTorch weights file that torch\.load\(weights_only=True\) can read"):
        read_state_dict(f)
    assert not (tmp_path / "ran").exists()
    torch.load(f, weights_only=False)  # the control: an unrestricted load runs the payload
    assert (tmp_path / "ran").exists()


def test_pickle_payload_in_a_checkpoint_is_refused_unrun(tmp_path):
    import pickle
    import sys
    from pathlib import Path
    import torch
    from mlrpl.fashionscenes import write_fashion_scenes
    from mlrpl.trainer import Trainer, TrainConfig
    sys.path.insert(0, str(Path(__file__).parent))
    from _train_run import build
    model, train, test = build("an", write_fashion_scenes(tmp_path / "scenes", n_train=48, n_val=16, source="digits"))
    run = tmp_path / "run"; run.mkdir()
    torch.save({"model": model.state_dict(), "epoch": 0, "x": _Payload(tmp_path / "ran")}, run / "checkpoint.pt")
    with pytest.raises((ValueError, pickle.UnpicklingError)):
        Trainer(model, train, test, TrainConfig(epochs=1, batch_size=16, progress=False), results_dir=run).fit(resume=True)
    assert not (tmp_path / "ran").exists()


def test_pickle_payload_in_a_mask_or_vector_file_is_refused_unrun(tmp_path):
    from mlrpl.embeddings import class_embeddings
    from mlrpl.masking import load_mask
    payload = np.array([_Payload(tmp_path / "ran")], dtype=object)
    np.save(tmp_path / "vectors.npy", payload, allow_pickle=True)
    with pytest.raises(ValueError, match=r"vectors\.npy is not a \.npy array that np\.load reads without pickles"):
        class_embeddings(["a"], tmp_path / "vectors.npy")
    np.savez(tmp_path / "mask.npz", known=payload, meta=json.dumps({}))
    with pytest.raises(ValueError, match=r"mask file .*mask\.npz: Object arrays cannot be loaded when allow_pickle=False"):
        load_mask(tmp_path / "mask.npz")
    assert not (tmp_path / "ran").exists()
    np.load(tmp_path / "vectors.npy", allow_pickle=True)  # the control
    assert (tmp_path / "ran").exists()
