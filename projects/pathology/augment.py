"""Online augmentation of training tiles: drawn anew for every tile in every epoch.

The paper's augmentation is static (`augment_flips`: each tile stored with its three flips).
Two online draws add what a small H&E set lacks (MoNuSeg trains on 30 images of 7 organs and is
tested on others):

- `rotate`: a random quarter turn, so with the stored flips a tile is seen in all 8 of its
  dihedral views (nuclei have no orientation);
- `stain_jitter` sigma: the H&E stain perturbation of Tellez et al. (2018, "HED-light" at
  sigma 0.05): the tile's optical density is split into haematoxylin, eosin and DAB by the
  Ruifrok-Johnston matrix, each stain scaled by U(1 - sigma, 1 + sigma) and shifted by
  U(-sigma, sigma), and recombined. Labs stain differently; the model should not care.
- `hsv_jitter` sigma: Tellez et al.'s other colour family ("HSV"): the hue turned by U(-sigma,
  sigma) of the colour circle, saturation and value (brightness) scaled by U(1 - sigma,
  1 + sigma). Stain jitter keeps a tile's colours on the H and E axes; this moves them off those
  axes, as scanners and organs unseen in training do (their study: HSV with HED is the best
  pair for unseen centres).

The colour deconvolution is a 3x3 matrix product in optical density; scikit-image's `rgb2hed`
is the same, but the project does not otherwise need scikit-image, so it is written here.
The HSV conversion is OpenCV's (float32, hue in degrees).
Randomness comes from torch's generator: seeded runs (training.seed_everything) draw the same
augmentations, DataLoader workers draw different ones.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

# Ruifrok & Johnston (2001): the optical density of haematoxylin, eosin and DAB (rows), as in
# scikit-image's `rgb_from_hed`.
RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], dtype=np.float32)
HED_FROM_RGB = np.linalg.inv(RGB_FROM_HED).astype(np.float32)
_DARKEST = 1.0 / 256  # the optical density of an 8-bit value 0 is finite: -log(1/256)


def stain_jitter(image: np.ndarray, scale: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """uint8 RGB (H, W, 3) with each H, E, D stain's density s -> s * scale + shift."""
    density = -np.log(np.maximum(image.astype(np.float32) / 255.0, _DARKEST))
    stains = density @ HED_FROM_RGB
    rgb = np.exp(-((stains * scale + shift) @ RGB_FROM_HED))
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)


def hsv_jitter(image: np.ndarray, hue_turn: float, saturation: float, value: float) -> np.ndarray:
    """uint8 RGB (H, W, 3) with its hue turned by hue_turn of the circle and its saturation
    and value multiplied (then clipped to [0, 1])."""
    hsv = cv2.cvtColor(image.astype(np.float32) / 255.0, cv2.COLOR_RGB2HSV)
    hsv[..., 0] = np.mod(hsv[..., 0] + 360.0 * hue_turn, 360.0)
    hsv[..., 1] = np.clip(hsv[..., 1] * saturation, 0.0, 1.0)
    hsv[..., 2] = np.clip(hsv[..., 2] * value, 0.0, 1.0)
    rgb = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class OnlineAugment:
    rotate: bool = False
    stain_sigma: float = 0.0
    hsv_sigma: float = 0.0

    def __bool__(self) -> bool:
        return self.rotate or self.stain_sigma > 0 or self.hsv_sigma > 0

    def __call__(self, image: np.ndarray, mask: np.ndarray, valid: np.ndarray):
        """One tile (uint8 HxWx3, its mask and valid map), augmented; the maps move with it."""
        if self.rotate:
            k = int(torch.randint(4, ()))
            image, mask, valid = (np.rot90(a, k, axes=(0, 1)) for a in (image, mask, valid))
        if self.stain_sigma > 0:
            draw = (torch.rand(2, 3) * 2 - 1).numpy() * self.stain_sigma
            image = stain_jitter(image, 1.0 + draw[0], draw[1])
        if self.hsv_sigma > 0:
            hue, saturation, value = ((torch.rand(3) * 2 - 1).numpy() * self.hsv_sigma).tolist()
            image = hsv_jitter(image, hue, 1.0 + saturation, 1.0 + value)
        return np.ascontiguousarray(image), np.ascontiguousarray(mask), np.ascontiguousarray(valid)
