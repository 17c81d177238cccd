"""Deterministic stand-in weights, shared by the golden-file generators and mlrpl's tests.

A golden fixture stores only a seed and the {name: shape} of a state dict (``shapes_to_json``); a test
re-creates the identical tensors with ``fill_state_dict(shapes_from_json(s), seed)`` and loads them, so the
fixtures carry no weight arrays. Rule, with the names taken in sorted order and ``g_i`` a fresh
``torch.Generator().manual_seed(seed + i)`` for the i-th name:

- ``*num_batches_tracked``                      → ``torch.tensor(0)`` (int64; ``g_i`` unused, ``i`` still counts)
- ``*running_var``                              → ``torch.rand(shape, generator=g_i) * 0.5 + 0.75``
- BatchNorm ``*.weight`` (a ``.weight`` whose sibling ``.running_var`` is among the names)
                                                → ``noise(shape, g_i) * scale + 1``
- everything else (conv/linear weights and biases, BN biases and running means, 0-d parameters)
                                                → ``noise(shape, g_i) * scale``

with ``noise = (torch.rand(shape, generator=g) * 2 - 1) * 3**0.5``, uniform with mean 0 and standard deviation 1.
``scale`` is 0.05 unless a fixture says otherwise. Uniform draws and basic arithmetic only, so that every CPU
re-creates the same bits: torch.rand's float32 numbers are k·2^-24 from the generator's integers, and each product
or sum after it is one IEEE rounding. (Not torch.randn: its float32 Box-Muller for 16 numbers or more has a
vectorised AVX2 path whose last bits differ from the scalar path other CPU capabilities take.) Entries that must
hold given data rather than noise (the official models' frozen ``wordFeatures``, ``inMatrix``, ``outMatrix``
parameters) are left out of ``shapes`` and passed in ``fixed``; they take no index. All tensors are float32 on the CPU.
"""
from __future__ import annotations

import json

import torch

SCALE = 0.05


def is_bn_weight(name: str, names) -> bool:
    "A BatchNorm affine weight: `<m>.weight` where `<m>.running_var` is also an entry."
    return name.endswith(".weight") and name[:-len("weight")] + "running_var" in names


def noise(shape, g: torch.Generator) -> torch.Tensor:
    "Uniform float32 noise of mean 0 and standard deviation 1, bit-identical on every CPU (module docstring)."
    return (torch.rand(shape, generator=g)*2 - 1)*3**0.5


def fill_state_dict(shapes: dict, seed: int, fixed: dict | None = None, scale: float = SCALE) -> dict:
    "Tensors for the named entries in `shapes` (see the module docstring), plus the `fixed` ones as given."
    names = sorted(shapes)
    out = {}
    for i, name in enumerate(names):
        shape = tuple(int(s) for s in shapes[name])
        g = torch.Generator().manual_seed(seed + i)
        if name.endswith("num_batches_tracked"): t = torch.tensor(0)
        elif name.endswith("running_var"): t = torch.rand(shape, generator=g)*0.5 + 0.75
        elif is_bn_weight(name, shapes): t = noise(shape, g)*scale + 1
        else: t = noise(shape, g)*scale
        out[name] = t
    for name, v in (fixed or {}).items():
        if name in out: raise ValueError(f"{name} is both filled and fixed")
        out[name] = torch.as_tensor(v, dtype=torch.float32).clone()
    return out


def shapes_of(state_dict: dict, exclude=()) -> dict:
    "{name: shape} of a state dict, without the names in `exclude`."
    return {k: tuple(v.shape) for k, v in state_dict.items() if k not in exclude}


def shapes_to_json(shapes: dict) -> str:
    return json.dumps({k: list(shapes[k]) for k in sorted(shapes)})


def shapes_from_json(s) -> dict:
    return {k: tuple(v) for k, v in json.loads(str(s)).items()}
