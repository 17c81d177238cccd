"""Faults in the data a user hands over (annotation files, images, masks, class vectors): each fails with one error
that names the file, parameter or class at fault, at dataset construction where it can, and never trains on
something silently wrong."""
import json

import numpy as np
import pytest
from PIL import Image, ImageFile

import mlrpl.embeddings as E
from mlrpl.data import get_dataset, label_graph, load_rgb
from mlrpl.fixtures import write_coco_fixture, write_vg_fixture, write_voc_fixture
from mlrpl.masking import drop_labels, known_mask, load_mask, save_mask

COCO_JSON = "instances_train2014.json"


@pytest.fixture
def coco(tmp_path):
    return write_coco_fixture(tmp_path / "coco")


def _coco_json(root):
    return root / "annotations" / COCO_JSON


# 1. COCO (and VG-200) annotation JSON

@pytest.mark.parametrize("content, message", [
    ('{"images": [{"id": 1, "file_na', r"is not valid JSON \(line 1 col 23\): Unterminated string"),
    ("", r"is empty"),
    ("  \n", r"is empty"),
    ("[]", r"holds a list, not a COCO object with images/annotations/categories"),
    ('"images"', r"holds a string, not a COCO object"),
])
def test_coco_json_truncated_empty_or_not_an_object(coco, content, message):
    _coco_json(coco).write_text(content)
    with pytest.raises(ValueError, match=rf"COCO annotation file .*{COCO_JSON} {message}"):
        get_dataset("coco2014", coco)


@pytest.mark.parametrize("key", ["images", "annotations", "categories"])
def test_coco_json_without_a_section(coco, key):
    d = json.loads(_coco_json(coco).read_text()); del d[key]; _coco_json(coco).write_text(json.dumps(d))
    with pytest.raises(ValueError, match=rf"{COCO_JSON} has no '{key}' \(a COCO instances file holds images, annotations and categories\)"):
        get_dataset("coco2014", coco)


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["images"][2].pop("file_name"), r"images\[2\] lacks 'file_name'"),
    (lambda d: d["annotations"][4].pop("category_id"), r"annotations\[4\] lacks 'category_id'"),
    (lambda d: d["categories"].__setitem__(1, "car"), r"categories\[1\] lacks 'id' and 'name'"),
    (lambda d: d.__setitem__("annotations", {}), r"'annotations' is an object, not a list"),
    (lambda d: d["images"][3].__setitem__("id", 42), r"images\[3\] repeats id 42"),
])
def test_coco_json_with_a_bad_record(coco, edit, message):
    d = json.loads(_coco_json(coco).read_text()); edit(d); _coco_json(coco).write_text(json.dumps(d))
    with pytest.raises(ValueError, match=rf"COCO annotation file .*{COCO_JSON}: {message}"):
        get_dataset("coco2014", coco)


def test_vg_label_json_truncated_or_a_list(tmp_path):
    root = write_vg_fixture(tmp_path)
    js = root / "vg_category_200_labels_index.json"
    js.write_text('{"1.jpg": [0, 5], "2.jpg": [19')
    with pytest.raises(ValueError, match=r"VG-200 label file .*vg_category_200_labels_index\.json is not valid JSON \(line 1 col 31\): Expecting .,. delimiter"):
        get_dataset("vg200", root)
    js.write_text("[[0, 5]]")
    with pytest.raises(ValueError, match=r"labels_index\.json holds a list, not an object mapping image names"):
        get_dataset("vg200", root)


# 2. VOC XML

def test_malformed_voc_xml_names_the_file(tmp_path):
    root = write_voc_fixture(tmp_path)
    (root / "Annotations" / "000009.xml").write_text("<annotation><object><name>horse</name></annotation>")
    with pytest.raises(ValueError, match=r"VOC annotation .*000009\.xml is not well-formed XML \(mismatched tag: line 1, "
                                         r"column 40\); listed in .*trainval\.txt"):
        get_dataset("voc2007", root)


# 3. truncated or unreadable images

def _image(coco, i=0):
    return coco / "train2014" / f"COCO_train2014_{[42, 7, 19, 3][i]:012d}.jpg"


@pytest.mark.parametrize("cut", ["half", "garbage", "empty"])
def test_truncated_or_unreadable_image_names_file_and_annotation(coco, cut):
    ds = get_dataset("coco2014", coco)
    f = _image(coco); data = f.read_bytes()
    f.write_bytes({"half": data[:len(data)//2], "garbage": b"not an image", "empty": b""}[cut])
    why = "image file is truncated" if cut == "half" else "cannot identify image file"
    with pytest.raises(ValueError, match=rf"image .*COCO_train2014_000000000042\.jpg \(listed in .*{COCO_JSON}\) cannot be read: {why}"):
        ds[0]
    assert ds[1][0] == 1  # the error is about that file only


def test_truncated_png_is_refused(tmp_path):
    Image.fromarray(np.arange(64*64*3, dtype=np.uint8).reshape(64, 64, 3)).save(tmp_path / "a.png")
    data = (tmp_path / "a.png").read_bytes(); (tmp_path / "a.png").write_bytes(data[:len(data)*2//3])
    with pytest.raises(ValueError, match=r"a\.png cannot be read"):
        load_rgb(tmp_path / "a.png")


def test_load_truncated_images_must_stay_off(coco, monkeypatch):
    import mlrpl.backbones, mlrpl.fashionscenes  # noqa: F401  the modules that read images leave PIL's default
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    ds = get_dataset("coco2014", coco)
    f = _image(coco); data = f.read_bytes(); f.write_bytes(data[:len(data)//2])
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # as another library may set it
    with Image.open(f) as im: im.load()  # the control: PIL itself now loads the cut file without a word
    with pytest.raises(RuntimeError, match=r"LOAD_TRUNCATED_IMAGES is on: a truncated image .*000042\.jpg \(listed in .*\) would load"):
        ds[0]


# 4. 16-bit images

def test_16bit_png_is_scaled_by_its_bit_depth_not_clipped(coco):
    dark, bright = np.full((32, 40), 1000, np.uint16), np.full((32, 40), 60000, np.uint16)
    dark[:, 20:] = bright[:, 20:] = 20000  # the signal lives above 255, where RGB conversion clips
    Image.fromarray(dark).save(_image(coco, 0), format="PNG"); Image.fromarray(bright).save(_image(coco, 2), format="PNG")
    assert Image.open(_image(coco, 0)).mode == "I;16"
    assert np.asarray(Image.open(_image(coco, 0)).convert("RGB")).min() == 255  # what PIL alone makes of it: all white
    ds = get_dataset("coco2014", coco)
    a, b = np.asarray(ds.load(0)), np.asarray(ds.load(2))
    assert a.shape == (32, 40, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a[0, :, 0], [4]*20 + [78]*20)  # round(v/257)
    np.testing.assert_array_equal(b[0, :, 0], [233]*20 + [78]*20)
    assert (a[..., 0] == a[..., 2]).all()


def test_16bit_extremes_and_big_endian_tiff(tmp_path):
    v = np.array([[0, 128, 129, 65535]], np.uint16)
    Image.fromarray(v).save(tmp_path / "v.png")
    np.testing.assert_array_equal(np.asarray(load_rgb(tmp_path / "v.png"))[0, :, 1], [0, 0, 1, 255])
    Image.fromarray(v).save(tmp_path / "v.tif")
    np.testing.assert_array_equal(np.asarray(load_rgb(tmp_path / "v.tif"))[0, :, 1], [0, 0, 1, 255])


@pytest.mark.parametrize("mode, values", [("F", np.array([[0.5, 2.0]], np.float32)), ("I", np.array([[0, 2**20]], np.int32))])
def test_modes_of_unknown_range_are_refused(tmp_path, mode, values):
    Image.fromarray(values).save(tmp_path / "x.tif")
    assert Image.open(tmp_path / "x.tif").mode == mode
    with pytest.raises(ValueError, match=rf"image .*x\.tif has mode '{mode}' .*no faithful 8-bit RGB conversion"):
        load_rgb(tmp_path / "x.tif")


# 5. mask files

@pytest.fixture
def labels():
    return np.where(np.random.default_rng(0).random((10, 4)) < 0.5, 1, -1)


@pytest.mark.parametrize("bad, shown", [(-1, r"-1\.0"), (0.3, r"0\.3"), (np.nan, "nan"), (2, r"2\.0")])
def test_mask_values_other_than_boolean(tmp_path, labels, bad, shown):
    k = np.ones((10, 4)); k[3, 2] = bad
    f = tmp_path / "m.npz"; np.savez(f, known=k, meta=json.dumps(dict(dataset="toy")))
    with pytest.raises(ValueError, match=rf"mask file .*m\.npz: 'known' may only hold booleans or 0/1, but entry \(3, 2\) is {shown} "
                                         r"\(1 of 40 entries are neither 0 nor 1\)"):
        drop_labels(labels, None, "file", mask_file=f)


def test_mask_of_integers_0_1_is_accepted(tmp_path, labels):
    k = known_mask(labels, 0.5)
    f = tmp_path / "m.npz"; np.savez(f, known=k.astype(np.int64), meta=json.dumps({}))
    np.testing.assert_array_equal(drop_labels(labels, None, "file", mask_file=f), drop_labels(labels, 0.5))


def test_mask_of_strings_or_not_an_archive(tmp_path, labels):
    f = tmp_path / "m.npz"; np.savez(f, known=np.full((10, 4), "y"), meta=json.dumps({}))
    with pytest.raises(ValueError, match=r"m\.npz: 'known' holds <U1 values, not booleans or 0/1"):
        load_mask(f)
    np.save(tmp_path / "one.npy", np.ones((10, 4), bool))
    with pytest.raises(ValueError, match=r"one\.npy holds one array, not the 'known'/'meta' archive of save_mask"):
        load_mask(tmp_path / "one.npy")
    (tmp_path / "cut.npz").write_bytes(f.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"mask file .*cut\.npz is not an \.npz archive"):
        load_mask(tmp_path / "cut.npz")


def test_mask_recorded_for_another_dataset(coco, tmp_path):
    y = get_dataset("coco2014", coco).labels
    f = save_mask(tmp_path / "voc.npz", known_mask(y, 0.5), "entry", 0.5, 0, dataset="voc2007/trainval")
    with pytest.raises(ValueError, match=r"voc\.npz was made for dataset 'voc2007/trainval' \(its record's 'dataset'\), not for 'coco2014/train'"):
        get_dataset("coco2014", coco, mask_scheme="file", mask_file=f)
    f = save_mask(tmp_path / "val.npz", known_mask(y, 0.5), "entry", 0.5, 0, dataset="coco2014/val")
    with pytest.raises(ValueError, match=r"made for dataset 'coco2014/val'"):
        get_dataset("coco2014", coco, mask_scheme="file", mask_file=f)
    with pytest.raises(ValueError, match=r"made for dataset 'coco2014/val' .*not for 'mine'"):
        drop_labels(y, None, "file", mask_file=f, dataset="mine")
    for name in ("coco2014/train", "COCO2014", ""):  # with or without the split; a record without a name is not checked
        f = save_mask(tmp_path / "ok.npz", known_mask(y, 0.5), "entry", 0.5, 0, dataset=name)
        np.testing.assert_array_equal(get_dataset("coco2014", coco, mask_scheme="file", mask_file=f).partial, drop_labels(y, 0.5))


def test_mask_record_uses_the_registered_name(tmp_path):
    ds = get_dataset("fashionscenes_digits", tmp_path / "digits")  # built by the fashionscenes loader, renamed after
    for name in ("fashionscenes_digits/train", "fashionscenes_digits", ds.name):
        f = save_mask(tmp_path / "m.npz", known_mask(ds.labels, 0.5), "entry", 0.5, 0, dataset=name)
        assert get_dataset("fashionscenes_digits", tmp_path / "digits", mask_scheme="file", mask_file=f).partial.shape == (96, 10)
    f = save_mask(tmp_path / "m.npz", known_mask(ds.labels, 0.5), "entry", 0.5, 0, dataset="fashionscenes_digits/val")
    with pytest.raises(ValueError, match=r"made for dataset 'fashionscenes_digits/val' .*not for 'fashionscenes_digits/train'"):
        get_dataset("fashionscenes_digits", tmp_path / "digits", mask_scheme="file", mask_file=f)


def test_mask_file_without_the_file_scheme(coco, tmp_path, labels):
    f = save_mask(tmp_path / "m.npz", known_mask(labels, 0.5), "entry", 0.5, 0)
    with pytest.raises(ValueError, match=r"mask_file='.*m\.npz' is only applied with scheme='file', but scheme='entry'"):
        drop_labels(labels, 0.3, mask_file=f)
    with pytest.raises(ValueError, match=r"coco2014/train: mask_file='.*m\.npz' is only applied with mask_scheme='file', "
                                         r"but mask_scheme='image'"):
        get_dataset("coco2014", coco, known_prop=0.5, mask_scheme="image", mask_file=f)


# 6. nothing to learn from

def test_masked_split_without_a_known_positive(coco, tmp_path):
    f = save_mask(tmp_path / "none.npz", np.zeros((4, 4), bool), "entry", 0.1, 0, "coco2014/train")
    with pytest.raises(ValueError, match=r"coco2014/train: masking \(mask_file='.*none\.npz'\) leaves no known positive label "
                                         r"\(0 of 16 entries known, none positive\)"):
        get_dataset("coco2014", coco, mask_scheme="file", mask_file=f)
    with pytest.raises(ValueError, match=r"coco2014/train: masking \(known_prop=0\.01, mask_scheme='entry', seed=0\) leaves no known "
                                         r"positive label \(0 of 16"):
        get_dataset("coco2014", coco, known_prop=0.01)
    neg_only = np.where(get_dataset("coco2014", coco).labels < 0, True, False)  # every negative known, no positive
    f = save_mask(tmp_path / "neg.npz", neg_only, "entry", 0.5, 0)
    with pytest.raises(ValueError, match=r"leaves no known positive label \(11 of 16 entries known, none positive\)"):
        get_dataset("coco2014", coco, mask_scheme="file", mask_file=f)


def test_annotations_without_a_positive(coco, tmp_path):
    d = json.loads(_coco_json(coco).read_text()); d["annotations"] = []; _coco_json(coco).write_text(json.dumps(d))
    with pytest.raises(ValueError, match=rf"coco2014/train: the labels read from .*{COCO_JSON} hold no positive at all \(4 images, 4 classes\)"):
        get_dataset("coco2014", coco)
    voc = write_voc_fixture(tmp_path / "voc", objects={"000001": [], "000002": [("dog", 1)]})  # difficult only: negatives
    with pytest.raises(ValueError, match=r"voc2007/trainval: the labels read from .*trainval\.txt hold no positive at all"):
        get_dataset("voc2007", voc)
    d["images"] = []; _coco_json(coco).write_text(json.dumps(d))
    with pytest.raises(ValueError, match=rf"coco2014/train: .*{COCO_JSON} lists no image"):
        get_dataset("coco2014", coco)


def test_a_class_without_a_known_positive_is_legal(coco):
    ds = get_dataset("coco2014", coco, known_prop=0.5)  # 'person' (2 positives) and 'dog' (1) lose theirs
    no_pos = ~(ds.partial == 1).any(0)
    assert no_pos.tolist() == [True, False, True, False] and (ds.labels == 1).any(0).all()
    assert "2 classes without a known positive" in repr(ds)
    A = label_graph(ds.partial)
    assert np.isfinite(A).all() and (A[no_pos] == 0).all()


# 7. class embeddings

@pytest.mark.parametrize("bad, shown", [(np.nan, "nan"), (np.inf, "inf"), (-np.inf, "-inf"), (1e39, "1e[+]?39")])
def test_nan_or_inf_in_user_embeddings(tmp_path, bad, shown):
    e = np.random.default_rng(0).normal(size=(3, 8)); e[2, 5] = bad; np.save(tmp_path / "vec.npy", e)
    with pytest.raises(ValueError, match=rf"class-embedding file .*vec\.npy: row 2 \(class 'c'\) holds {shown} at column 5, "
                                         r"not a finite float32; 1 of 3 rows hold NaN or inf"):
        E.class_embeddings(["a", "b", "c"], tmp_path / "vec.npy")


def test_embeddings_file_that_is_not_one_numeric_array(tmp_path):
    np.savez(tmp_path / "v.npz", a=np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"v\.npz is an \.npz archive; save the \(C, D\) array itself"):
        E.class_embeddings(["a", "b"], tmp_path / "v.npz")
    (tmp_path / "t.npy").write_text("cat 0.1 0.2\n")
    with pytest.raises(ValueError, match=r"class-embedding file .*t\.npy is not a \.npy array"):
        E.class_embeddings(["cat"], tmp_path / "t.npy")
    np.save(tmp_path / "s.npy", np.array([["x"], ["y"]]))
    with pytest.raises(ValueError, match=r"s\.npy holds <U1 values, not numbers"):
        E.class_embeddings(["a", "b"], tmp_path / "s.npy")


def test_nan_in_the_glove_file_names_file_word_and_class(tmp_path, monkeypatch):
    v = np.lib.format.open_memmap(tmp_path / "glove.npy", mode="w+", dtype=np.float32, shape=(3, 4))
    v[:] = 1; v[2, 1] = np.nan; v.flush()
    vectors = np.load(tmp_path / "glove.npy", mmap_mode="r")
    monkeypatch.setattr(E, "load_glove", lambda: (vectors, {"traffic": 0, "light": 2, "cat": 1}))
    assert E.class_embeddings(["cat"], cache=False).tolist() == [[1, 1, 1, 1]]
    with pytest.raises(ValueError, match=r"GloVe file .*glove\.npy: the vector of 'light' \(row 2\), a word of class 'traffic light', holds NaN"):
        E.class_embeddings(["cat", "traffic light"], cache=False)


def test_nan_from_the_sentence_model(monkeypatch):
    class Model:
        def encode(self, text, **kw): return np.where(np.arange(len(text))[:, None] == 1, np.nan, 1.0) * np.ones((len(text), 5))
    monkeypatch.setattr(E, "load_sentence_model", lambda: Model())
    with pytest.raises(ValueError, match=r"all-MiniLM-L6-v2 vectors .*: row 1 \(class 'dog'\) holds nan"):
        E.class_embeddings(["cat", "dog"], "minilm", cache=False)


def test_a_corrupt_cached_vector_file_names_it(tmp_path, monkeypatch):
    monkeypatch.setenv("MLRPL_DATA", str(tmp_path))
    ones = np.ones((2, 3), np.float32)
    E.cached_vectors("test", "k", lambda: ones)
    (f,) = (tmp_path / "embeddings").iterdir()
    np.save(f, np.full((2, 3), np.nan, np.float32))
    with pytest.raises(ValueError, match=rf"cached vectors .*{f.name} are not a finite \(C, D\) float array; delete the file"):
        E.cached_vectors("test", "k", lambda: ones)
    f.write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(ValueError, match=rf"cached vectors .*{f.name} cannot be read"):
        E.cached_vectors("test", "k", lambda: ones)
