"""MILAN exemplars for vision neurons (METHODS.md §F step 1, images): the vision tower of a VLM.

For each unit of a vision-tower module's output [batch, patches, width] (e.g. an MLP's first
linear layer in the testbed's SigLIP tower):
- its top k images by the unit's maximum over patches;
- its 0.99-quantile over every patch of every image (`interp.UpperQuantile`, exact);
- each exemplar's mask: the patches above that threshold, as a [grid, grid] boolean map, and
  `masked_png` to draw them over the image (the regions MILAN's captioner reads).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from interp.batching import Batch
from interp.errors import InterpError
from interp.reducers import TopK, UpperQuantile


@dataclass
class ImageExemplar:
    image: int  # index into the image set
    value: float  # the unit's maximum over the image's patches
    mask: torch.Tensor  # [grid, grid] bool: patches above the threshold


@dataclass
class VisionNeuronExemplars:
    module: str
    unit: int
    threshold: float
    exemplars: list[ImageExemplar]


def _module(hf: nn.Module, name: str) -> nn.Module:
    try:
        return hf.get_submodule(name)
    except AttributeError as e:
        raise InterpError(f"the model has no module {name!r}") from e


@torch.inference_mode()
def _patch_activations(hf: nn.Module, module: nn.Module, vision: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """[n, patches, width]: `module`'s output while the vision tower encodes `images` [n, 3, H, W]."""
    got: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda _m, _i, out: got.append(out[0] if isinstance(out, tuple) else out))
    try:
        vision(pixel_values=images.to(next(hf.parameters()).dtype))
    finally:
        handle.remove()
    if not got:
        raise InterpError("the module did not run while the vision tower encoded the images")
    return got[0].float()


def image_exemplars(hf: nn.Module, module: str, images: torch.Tensor, units: Sequence[int], *, k: int = 15,
                    quantile: float = 0.99, vision: str = "model.vision_tower",
                    batch_size: int = 64) -> list[VisionNeuronExemplars]:
    """Top-k images and above-threshold patch masks for `units` of the vision module `module`.

    images [n, 3, H, W] as the VLM's processor makes them; the patch grid must be square (no CLS token).
    """
    mod, tower = _module(hf, module), _module(hf, vision)
    acts = torch.cat([_patch_activations(hf, mod, tower, images[s:s + batch_size])
                      for s in range(0, len(images), batch_size)])  # [n, patches, width]
    n, patches, width = acts.shape
    grid = math.isqrt(patches)
    if grid * grid != patches:
        raise InterpError(f"{module}: {patches} positions is not a square patch grid")
    bad = [u for u in units if not 0 <= u < width]
    if bad:
        raise InterpError(f"units {bad[:5]} are outside {module}'s width {width}")
    one = torch.ones(n, patches, dtype=torch.long)
    batch = Batch(input_ids=one, attention_mask=one, mask=one.bool(), positions=torch.arange(patches).expand(n, -1),
                  doc_index=torch.arange(n), group_index=torch.zeros(n, dtype=torch.long))
    top, quant = TopK(k=min(k, n)), UpperQuantile(quantile, tokens=n * patches)
    for r in (top, quant):
        r.bind(module, width, ["all"])
        r.update(module, acts, batch)
    thr = quant.quantile(module)
    st = top.state[module]
    out = []
    for u in units:
        exs = [ImageExemplar(int(d), float(v), (acts[int(d), :, u] > thr[u]).reshape(grid, grid))
               for v, d in zip(st["values"][u].tolist(), st["doc"][u].tolist()) if d >= 0]
        out.append(VisionNeuronExemplars(module, int(u), float(thr[u]), exs))
    return out


def masked_png(images: torch.Tensor, exemplars: VisionNeuronExemplars, *, columns: int = 5) -> bytes:
    """The exemplar images in a row, patches outside the mask dimmed (the highlighted regions)."""
    from interp.plotting import png, subplots

    exs = exemplars.exemplars
    rows = max(1, math.ceil(len(exs) / columns))
    fig, axes = subplots(nrows=rows, ncols=columns, figsize=(1.6 * columns, 1.7 * rows), dpi=100, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, e in zip(axes.flat, exs):
        img = (images[e.image].float().mean(0) * 0.5 + 0.5).clamp(0, 1)  # gray [H, W] in [0, 1]
        scale = img.shape[-1] // e.mask.shape[-1]
        keep = e.mask.repeat_interleave(scale, 0).repeat_interleave(scale, 1).float()
        rgb = torch.stack([img, img, img], -1) * (0.25 + 0.75 * keep[..., None])
        rgb[..., 0] = torch.maximum(rgb[..., 0], 0.6 * keep)  # a red tint on the marked patches
        ax.imshow(rgb.numpy())
        ax.set_title(f"{e.value:.2f}", fontsize=7)
    fig.suptitle(f"{exemplars.module} unit {exemplars.unit} (threshold {exemplars.threshold:.2f})", fontsize=8)
    return png(fig)
