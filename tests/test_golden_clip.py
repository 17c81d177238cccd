"""Golden tests: the backbone clip_rn101 equals CLSL's CLIP image encoder (`CLIP_conv_proj.visual`, loaded by
`build_model_conv_proj`) on the inputs and outputs stored in tests/golden/clip_rn101.npz (made by
make_golden_clip.py); plus its weights-file errors, frozen trunk and 448-px token shape. The encoders are compared
in float64 (tolerances SMALL, MODEL: tests/golden/compare.py); the loader's float32 resize has its own."""
import copy
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

GOLDEN = Path(__file__).parent / "golden"
sys.path.insert(0, str(GOLDEN))
from compare import MODEL, SMALL, U32, U64, as64, close  # noqa: E402
from weights import fill_state_dict, shapes_from_json  # noqa: E402

from mlrpl.backbones import BACKBONES, get_backbone
from mlrpl.clip import RN101_URL, AttentionPool2d, ModifiedResNet, clip_architecture, read_clip_state_dict

T = lambda a: torch.as_tensor(np.asarray(a))


@pytest.fixture(scope="module")
def z():
    return np.load(GOLDEN / "clip_rn101.npz")


@pytest.fixture(scope="module")
def release(z, tmp_path_factory):
    "The fixture's stand-in for RN101.pt: every tensor of the small CLIP, float16 where the release is, as a state-dict file."
    sd = fill_state_dict(shapes_from_json(z["shapes"]), int(z["seed"]), scale=float(z["scale"]))
    half = set(json.loads(str(z["half_keys"])))
    sd = {k: v.half() if k in half else v for k, v in sd.items()}
    sd |= {"input_resolution": torch.tensor(224), "context_length": torch.tensor(8), "vocab_size": torch.tensor(16)}
    f = tmp_path_factory.mktemp("weights") / "RN101.pt"
    torch.save(sd, f)
    return f


@pytest.fixture(scope="module")
def loaded(z, release):
    "clip_rn101 through the loader (float32, as mlrpl loads RN101.pt), without and with the tokens' L2 norm."
    size = int(z["input_size"])
    raw = get_backbone("clip_rn101", pretrained=release, out_dim=512, input_size=size, normalize=False).eval()
    norm = get_backbone("clip_rn101", pretrained=release, out_dim=512, input_size=size).eval()
    return raw, norm


def in_float64(bb, z):
    """A float64 copy of a loaded encoder, holding the official loader's positional embedding: mlrpl's loader
    resizes it in float32 (mlrpl/clip.py: read_clip_state_dict casts the file to float32, clip_resnet resizes), and
    that resize is compared on its own (test_positional_embedding_resized_as_the_official_loader)."""
    bb = copy.deepcopy(bb).double()
    with torch.no_grad(): bb.visual.attnpool.positional_embedding.copy_(as64(z["positional_embedding"]))
    return bb


@pytest.fixture(scope="module")
def outputs(z, loaded):
    "Raw and normalised tokens, with the mean token's attention, in float64."
    raw, norm = (in_float64(bb, z) for bb in loaded)
    x = as64(z["images"])
    with torch.no_grad():
        attn = raw.visual.attnpool.attend(raw.visual.layer4(raw.trunk(x)))[1]
        return dict(raw=raw, tokens=raw(x), encoder=norm(x), attention=attn)


def test_layout_is_read_from_the_file(z, release):
    arch = clip_architecture(read_clip_state_dict(release))
    assert arch == dict(layers=tuple(int(v) for v in z["layers"]), width=int(z["width"]), output_dim=512, grid=7)


def test_positional_embedding_resized_as_the_official_loader(z, release, loaded):
    "Both resize the 7 × 7 grid bicubically to 3 × 3; mlrpl in float32, the official loader (fixture) in float64."
    ours = loaded[0].visual.attnpool.positional_embedding.detach().double().numpy()  # (1 + 3·3, C)
    grid = read_clip_state_dict(release)["attnpool.positional_embedding"][1:]  # (7·7, C), float32 values
    # Per 1-D bicubic pass in float32, M = max|input|: the tap offset t (2 roundings of values <= 7.5, times
    # Σ|w'(t)| <= 4.2 for A = -0.75) <= 63 U32·M; the 4 cubic weights (Horner: 6 roundings of terms <= 4.5 each)
    # <= 108 U32·M; the 4-term sum <= 5.5 U32·M: <= 177 U32·M. Two passes, each scaled by Σ|w(t)| <= 1.375:
    # <= 487 U32·M; plus the fixture's rounding to float32 (<= 2 U32·M): 512 U32·M (~7e-6 here).
    atol = 512*U32*float(grid.abs().max())
    np.testing.assert_allclose(ours, z["positional_embedding"], rtol=0, atol=atol)
    np.testing.assert_array_equal(ours[0], z["positional_embedding"][0])  # the mean token's row: copied


def test_dense_tokens_equal_the_official_encoder(z, outputs):
    "Official output (B, D, 1 + P): the mean token, then P locations; clip_rn101 gives the locations as (B, D, h, w)."
    y = outputs["tokens"]  # (B, D, h, w)
    assert y.shape == (2, 512, int(z["input_size"]) // 32, int(z["input_size"]) // 32)
    # 27 convolutions (stem, 1 + 2 + 3 + 2 bottlenecks) and two projections, sums of <= 3·3·512 = 4608 terms: MODEL
    close(y.flatten(2), z["tokens"][:, :, 1:], MODEL)


def test_normalised_tokens_are_what_sarlp_encodes(z, outputs):
    close(outputs["encoder"].flatten(2).transpose(1, 2), z["encoder_tokens"], MODEL)  # (B, P, D); as above, then x/‖x‖


def test_mean_token_attention(z, outputs):
    close(outputs["attention"], z["attention"][:, 0], MODEL)  # the trunk as above, then q·k over 2048 channels, softmax


def test_pooled_embedding_equals_clips_attention_pool(z):
    g, e, h, o = (int(v) for v in z["pool_dims"])
    pool = AttentionPool2d(g, e, h, o)
    pool.load_state_dict(fill_state_dict(shapes_from_json(z["pool_shapes"]), int(z["pool_seed"]), scale=float(z["pool_scale"])))
    with torch.no_grad(): close(pool.double()(as64(z["pool_map"])), z["pool_out"], SMALL)  # 4 projections of 64, softmax over 10


def test_torchscript_archive_loads_like_the_state_dict(release, tmp_path):
    "OpenAI's RN101.pt is a TorchScript archive: read with torch.jit.load(...).state_dict()."
    sd = torch.load(release, weights_only=True)
    holder = torch.nn.Module()
    for k, v in sd.items():  # a module tree whose state dict is the file's, key for key
        *path, leaf = k.split(".")
        m = holder
        for p in path:
            if not hasattr(m, p): m.add_module(p, torch.nn.Module())
            m = getattr(m, p)
        m.register_buffer(leaf, v)
    holder.forward = lambda x: x + 1
    archive = tmp_path / "RN101.pt"
    torch.jit.save(torch.jit.trace(holder, torch.zeros(1)), archive)
    got = read_clip_state_dict(archive)
    want = read_clip_state_dict(release)
    assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)
    assert all(v.dtype in (torch.float32, torch.int64) for v in got.values())


# --- errors, freezing, the 448-px shape -------------------------------------------------------------------

def test_registered_lazily_with_the_other_backbones():
    assert "clip_rn101" in BACKBONES.available()


def test_imagenet_and_missing_files_say_where_rn101_pt_goes(tmp_path, monkeypatch):
    monkeypatch.setenv("MLRPL_DATA", str(tmp_path))
    want = str(tmp_path / "weights" / "RN101.pt")
    with pytest.raises(ValueError, match=r"pretrained='imagenet': clip_rn101 has no ImageNet weights; .*RN101\.pt \("
                                         + RN101_URL.replace(".", r"\.") + r"\): put it at " + want) as e:
        get_backbone("clip_rn101", pretrained="imagenet")
    assert "mlrpl never downloads weights" in str(e.value)
    with pytest.raises(FileNotFoundError, match=r"pretrained='clip': weights file " + want + " does not exist; clip_rn101 loads"):
        get_backbone("clip_rn101", pretrained="clip")
    with pytest.raises(FileNotFoundError, match=r"pretrained='/nowhere/RN101\.pt': weights file /nowhere/RN101\.pt does not exist"):
        get_backbone("clip_rn101", pretrained="/nowhere/RN101.pt")
    with pytest.raises(ValueError, match="pretrained must be None, 'clip' or the path of RN101.pt, got 3"):
        get_backbone("clip_rn101", pretrained=3)


def test_weights_of_another_model_are_refused(tmp_path):
    f = tmp_path / "resnet101.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, f)
    with pytest.raises(ValueError, match=r"resnet101\.pth holds no image-encoder weights \(no 'visual\.\*' keys"):
        get_backbone("clip_rn101", pretrained=f)
    g = tmp_path / "broken.pt"
    torch.save({"visual.layer1.0.conv1.weight": torch.zeros(8, 8, 1, 1)}, g)
    with pytest.raises(ValueError, match=r"is not a CLIP ResNet image encoder: it lacks visual\.attnpool\.positional_embedding"):
        get_backbone("clip_rn101", pretrained=g)


def test_wrong_shapes_list_every_mismatch(z, release, tmp_path):
    sd = torch.load(release, weights_only=True)
    sd["visual.layer2.0.conv2.weight"] = torch.zeros(3, 3, 3, 3)
    del sd["visual.bn1.running_mean"]
    f = tmp_path / "RN101.pt"
    torch.save(sd, f)
    with pytest.raises(ValueError, match=r"RN101\.pt \(expected OpenAI CLIP's RN101\.pt\) does not fit ModifiedResNet: "
                                         r"1 missing keys: bn1\.running_mean; 1 shape mismatches: \('layer2\.0\.conv2\.weight'"):
        get_backbone("clip_rn101", pretrained=f)


def test_frozen_trunk_and_trained_head(release, z):
    bb = get_backbone("clip_rn101", pretrained=release, out_dim=64, input_size=int(z["input_size"])).train()
    assert not any(p.requires_grad for p in bb.trunk.parameters())
    assert not any(m.training for m in bb.trunk.modules()) and bb.visual.layer4.training and bb.change_channel.training
    x = T(z["images"])
    bb(x).square().mean().backward()
    assert all(p.grad is None for p in bb.trunk.parameters())
    a = bb.visual.attnpool
    assert a.v_proj.weight.grad is not None and a.c_proj.weight.grad is not None and bb.visual.layer4[0].conv1.weight.grad is not None
    assert a.q_proj.weight.grad is None and not a.q_proj.weight.requires_grad  # unused by the dense tokens
    mean = bb.visual.bn1.running_mean.clone()
    bb(x)
    assert torch.equal(bb.visual.bn1.running_mean, mean)  # frozen BatchNorm: statistics never updated


def test_rn101_tokens_at_448_are_512_by_14_by_14():
    torch.manual_seed(0)
    bb = get_backbone("clip_rn101", out_dim=512).eval()
    assert bb.visual.layers == (3, 4, 23, 3) and bb.visual.attnpool.grid == 14 and bb.visual.attnpool.num_heads == 32
    assert bb.trunk_shape(448) == (1024, 28, 28)
    bb.cached = True
    with torch.no_grad(): y = bb.double()(torch.randn(2, 1024, 28, 28, dtype=torch.float64))
    assert y.shape == (2, 512, 14, 14)
    # x/‖x‖ then its norm: two sums of 512 squares, two square roots and a division, (512 + 4)·U64 <= 5.8e-14
    np.testing.assert_allclose(y.norm(dim=1).numpy(), np.ones((2, 14, 14)), rtol=0, atol=(512 + 4)*U64)


def test_input_size_must_be_a_multiple_of_32():
    with pytest.raises(ValueError, match="input_size must be a multiple of 32"):
        get_backbone("clip_rn101", input_size=440)


def test_random_init_is_clips():
    torch.manual_seed(0)
    m = ModifiedResNet((1, 1, 1, 1), width=8, output_dim=16, input_size=64)
    assert all(float(b.bn3.weight.detach().abs().sum()) == 0 for layer in (m.layer1, m.layer2, m.layer3, m.layer4) for b in layer)
    # the std of 256 × 256 draws of std 1/16 has a standard error of (1/16)/sqrt(2 · 65536) = 1.7e-4: 0.005 is 29 of them
    assert abs(float(m.attnpool.q_proj.weight.std()) - 256 ** -0.5) < 0.005
