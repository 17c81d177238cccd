"""Golden fixture for CLSL's CLIP-ResNet image encoder: `python tests/golden/make_golden_clip.py --reference DIR`.

DIR is a checkout of the official CLSL code (github Qingdandian/CLSL). Its `clip_fine_tuning/model.py` is imported
on its own (the package's `__init__` needs the text tokenizer's dependencies) and run on the CPU:

- `build_model_conv_proj(state_dict, cfg)` with `cfg.img_size = 96` builds `CLIP_conv_proj`, whose `visual` is the
  encoder CLSL's `sarlp_clip` reads: for each image it returns (B, D, 1 + P) tokens (the map's mean, then the P
  locations) and the mean token's attention (B, 1, 1 + P). The fixture keeps the tokens, the attention, and the
  tokens as `SARLP.forward` uses them: transposed to (B, 1 + P, D), divided by their L2 norm, the mean dropped.
- its `AttentionPool2d` (plain CLIP's pool, whose token 0 is the pooled image embedding) is run on its own, with
  small dimensions, on a random map.

The weights are a structurally faithful small CLIP: RN101's width (64, so 2048 channels and 32 attention heads)
with (1, 2, 3, 2) bottlenecks instead of (3, 4, 23, 3), a 7 × 7 + 1 positional embedding as in the 224-px release,
and a one-layer text tower. They are `weights.py:fill_state_dict(shapes, seed, scale)`, with the tensors that the
official loader holds in float16 stored in float16 (`half_keys`, as in the half-precision release). No weight
is stored in the fixture. Running it twice gives identical files.

Precision: the official loader is given float64 copies of those weights, so its bicubic resize of the positional
embedding runs in float64 (its load_state_dict then rounds the result into the model's float32 parameter, kept as
`positional_embedding`); the loaded encoder and the attention pool then run in float64 on float32-valued images
and maps, and every output is stored in float64.
"""
import argparse
import importlib.util
import json
import sys
import types
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from official import f32, out64, t64  # noqa: E402
from weights import fill_state_dict, shapes_of, shapes_to_json  # noqa: E402

OUT = HERE / "clip_rn101.npz"
LAYERS, WIDTH, EMBED = (1, 2, 3, 2), 64, 512  # bottlenecks per stage, stem width, embedding channels
TEXT = dict(context_length=8, vocab_size=16, transformer_width=64, transformer_heads=1, transformer_layers=1)
SEED, SCALE, SIZE = 2024, 0.05, 96
POOL = dict(grid=3, embed_dim=64, heads=4, output_dim=16)  # the stand-alone attention pool


def load_model_py(ref: Path):
    "clip_fine_tuning/model.py of the checkout, as a module."
    spec = importlib.util.spec_from_file_location("clsl_clip_model", ref / "clip_fine_tuning" / "model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def release_state_dict(M):
    "Stand-in weights with the released file's keys and shapes (224 px), float16 where the official model is."
    torch.manual_seed(0)
    m = M.CLIP_conv_proj(EMBED, 224, LAYERS, WIDTH, None, *TEXT.values())
    M.convert_weights(m)  # the official loader's float16 conversion: these tensors are float16 in the release
    shapes = shapes_of(m.state_dict())
    half = sorted(k for k, v in m.state_dict().items() if v.dtype == torch.float16)
    sd = fill_state_dict(shapes, SEED, scale=SCALE)
    return {k: v.half() if k in half else v for k, v in sd.items()}, shapes, half


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference", type=Path, required=True)
    a = ap.parse_args()
    M = load_model_py(a.reference)
    sd, shapes, half = release_state_dict(M)
    assert sd["visual.attnpool.positional_embedding"].shape == (7 * 7 + 1, 32 * WIDTH)
    rng = np.random.default_rng(5)
    out = dict(layers=np.array(LAYERS), width=np.int64(WIDTH), seed=np.int64(SEED), scale=np.float64(SCALE),
               shapes=shapes_to_json(shapes), half_keys=json.dumps(half), input_size=np.int64(SIZE))

    # CLSL's encoder at SIZE px: positional embedding resized 7 × 7 → SIZE/32 × SIZE/32
    model = M.build_model_conv_proj({k: v.double() for k, v in sd.items()}, types.SimpleNamespace(img_size=SIZE))
    assert model.visual.attnpool.positional_embedding.dtype == torch.float32  # the resize, rounded to float32 at load
    model = model.float().double()  # .float() as sarlp_clip's loader; then float64, the values unchanged
    out["images"] = x = f32(rng.standard_normal((2, 3, SIZE, SIZE)))
    out["positional_embedding"] = out64(model.visual.attnpool.positional_embedding)
    with torch.no_grad(): tokens, attn = model.visual(t64(x))  # (B, D, 1 + P), (B, 1, 1 + P)
    out["tokens"], out["attention"] = out64(tokens), out64(attn)
    t = tokens.transpose(1, 2)
    out["encoder_tokens"] = out64((t / t.norm(dim=-1, keepdim=True))[:, 1:])  # SARLP.forward: x / ‖x‖, then x[:, 1:]

    # plain CLIP's attention pool: token 0 of its output is the pooled embedding
    pool = M.AttentionPool2d(POOL["grid"], POOL["embed_dim"], POOL["heads"], POOL["output_dim"])
    pool_shapes = shapes_of(pool.state_dict())
    pool.load_state_dict(fill_state_dict(pool_shapes, SEED + 1, scale=0.3))
    pool.double()
    out.update(pool_dims=np.array(list(POOL.values())), pool_seed=np.int64(SEED + 1), pool_scale=np.float64(0.3),
               pool_shapes=shapes_to_json(pool_shapes))
    out["pool_map"] = fmap = f32(rng.standard_normal((2, POOL["embed_dim"], POOL["grid"], POOL["grid"])))
    with torch.no_grad(): out["pool_out"] = out64(pool(t64(fmap))[0])  # (B, D)
    np.savez_compressed(OUT, **out)
    print(f"wrote {OUT}: tokens {tokens.shape}, |tokens| max {float(tokens.abs().max()):.3g}, "
          f"pooled max {float(np.abs(out['pool_out']).max()):.3g}")
