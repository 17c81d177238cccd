"""Faults in the data a user hands over (annotation files, images, masks, class vectors): each fails with one error
that names the file, parameter or class at fault, at dataset construction where it can, and never trains on
something silently wrong."""
import json

import numpy as np
import pytest
from PIL import Image, ImageFile

import mlrpl.embeddings as E
from mlrpl.data import get_dataset, label_graph, load_rgb, write_coco_fixture, write_vg_fixture, write_voc_fixture
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
