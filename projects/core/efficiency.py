"""What every trained model's size is measured by: parameters (PyTorch's and Keras' count)
and the saved weights file (written whole or not at all, read without executing code).
The CPU timings are in projects.core.timing."""
from __future__ import annotations

import io
import os
from pathlib import Path

import torch
from torch import nn


def count_params(model: nn.Module) -> int:
    """Trainable parameters, as PyTorch counts them."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_params_keras(model: nn.Module) -> int:
    """Parameters as Keras' `model.count_params()` reports them.

    Keras counts a BatchNormalization layer as 4 per channel (gamma, beta and the two
    moving statistics); PyTorch keeps the statistics as buffers, not parameters.
    """
    total = sum(p.numel() for p in model.parameters())
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.running_mean is not None:
            total += module.running_mean.numel() + module.running_var.numel()
    return total


def _save(obj, path: Path) -> int:
    """torch.save through Python's file I/O, written whole or not at all.

    torch.save straight to a path reports a full disk as a RuntimeError ("[enforce fail at
    inline_container.cc] unexpected pos ...") and leaves a truncated file; serialising to
    memory first turns it into an OSError naming the file (ENOSPC, EFBIG, EACCES...), which
    the entry points report in one line, and the rename never exposes a partial file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(buffer.getbuffer())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.filename is None or Path(exc.filename) == tmp:
            raise OSError(exc.errno, exc.strerror, str(path)) from None
        raise
    return len(buffer.getbuffer())


def save_weights(model: nn.Module, path: Path) -> int:
    """Write the state_dict (tensors only: loads with weights_only=True); returns bytes."""
    return _save(model.state_dict(), path)


def save_weights_with_optimizer(model: nn.Module, optimizer: torch.optim.Optimizer, path: Path) -> int:
    """Weights plus optimizer state: what a Keras HDF5 checkpoint holds (the paper's sizes)."""
    return _save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, path)


def load_weights(model: nn.Module, path: Path) -> nn.Module:
    # weights_only: a weights file never executes pickled code, even one the user downloaded.
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model
