"""Make torchvision (and so timm and segmentation-models-pytorch) import on CPU torch.

The registry's torchvision 0.28.0 is a CUDA build: its compiled ops library `_C.so` cannot
load against the CPU build of torch 2.13.0. torchvision copes with a missing `_C` everywhere
except `_meta_registrations.py`, which registers fake kernels for `torchvision::nms` and
`torchvision::qnms` unconditionally and fails with
`RuntimeError: operator torchvision::nms does not exist`.

`install()` declares those two operator schemas (the same signatures as torchvision's C++)
and gives `nms` a pure-PyTorch CPU kernel, so torchvision imports and `torchvision.ops.nms`
works. It must run before the first `import torchvision`; `projects/__init__.py` calls it.
When a working `_C` is present (a matching CPU torchvision), nothing is declared.
"""
from __future__ import annotations

import importlib.util
import sys

import torch

_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_LIBRARY: torch.library.Library | None = None  # kept alive: dropping it unregisters the ops


def nms_reference(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression; same contract as torchvision.ops.nms.

    boxes: (N, 4) as (x1, y1, x2, y2); returns the kept indices sorted by decreasing score.
    """
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    x1, y1, x2, y2 = boxes.unbind(1)
    areas = (x2 - x1) * (y2 - y1)
    order = scores.argsort(descending=True)
    suppressed = torch.zeros(len(boxes), dtype=torch.bool, device=boxes.device)
    keep = []
    for idx in order.tolist():
        if suppressed[idx]:
            continue
        keep.append(idx)
        w = (torch.minimum(x2[idx], x2) - torch.maximum(x1[idx], x1)).clamp(min=0)
        h = (torch.minimum(y2[idx], y2) - torch.maximum(y1[idx], y1)).clamp(min=0)
        inter = w * h
        iou = inter / (areas[idx] + areas - inter)
        suppressed |= iou > iou_threshold
    return torch.tensor(keep, dtype=torch.int64, device=boxes.device)


def _compiled_ops_load() -> bool:
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return False
    import glob
    import os

    for location in spec.submodule_search_locations:
        for lib in glob.glob(os.path.join(location, "_C*.so")):
            try:
                torch.ops.load_library(lib)
                return True
            except (OSError, RuntimeError):
                return False
    return False


def install() -> bool:
    """Declare the missing ops if needed. Returns True when the shim is active."""
    global _LIBRARY
    if _LIBRARY is not None:
        return True
    if "torchvision" in sys.modules or _compiled_ops_load():
        return False
    try:
        torch.ops.torchvision.nms.default  # already declared by someone else
        return False
    except (AttributeError, RuntimeError):
        pass
    lib = torch.library.Library("torchvision", "DEF")
    for schema in _SCHEMAS.values():
        lib.define(schema)
    lib.impl("nms", nms_reference, "CPU")
    _LIBRARY = lib
    return True
