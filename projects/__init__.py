"""Study code and the shared machinery beside it.

Importing the package first applies the runtime defaults (offline, passive OpenMP, the
embedded store) and the torchvision CPU shim, so that everything after it can import
torch, torchvision, timm and segmentation_models_pytorch safely.
"""
from projects.core import runtime as _runtime

_runtime.apply_env_defaults()

from projects.core import torchvision_compat as _tv  # noqa: E402

_tv.install()
