"""Training augmentation on whole batches, in torch, on the training device.

Input: a ``uint8`` batch ``(N, H, W, C)`` taken straight from the dataset's prepared arrays. Output: a
normalised ``float32`` ``(N, C, H, W)`` batch (channels-last in memory, which the convolutions prefer) and
the targets (class ids, or soft labels when mixup/cutmix is on).

Per-image random crop (zero padding) and horizontal flip are vectorised; TrivialAugment (torchvision v2) draws
one operation per group of images; mixup/cutmix (torchvision v2) mix the normalised batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from imgcls.bundle import InputSpec
from imgcls.config import AugmentConfig

# TrivialAugment draws one random operation per group; this many groups per batch at most.
_TRIVIAL_GROUPS = 32


@dataclass
class BatchAugment:
    """Augment-and-normalise for training batches (see the module docstring).

    Example:
        aug = BatchAugment(cfg.augment, dataset.input, num_classes=10, device="cpu")
        x, y = aug(images_uint8_nhwc, labels, generator)
    """

    cfg: AugmentConfig
    spec: InputSpec
    num_classes: int
    device: str = "cpu"

    def __post_init__(self) -> None:
        import torch

        c = self.spec.channels
        self._scale = (1.0 / (255.0 * torch.tensor(self.spec.std, dtype=torch.float32))).view(1, c, 1, 1)
        self._shift = (-torch.tensor(self.spec.mean, dtype=torch.float32) / torch.tensor(self.spec.std)).view(
            1, c, 1, 1
        )
        self._scale = self._scale.to(self.device)
        self._shift = self._shift.to(self.device)
        self._trivial: Any = None
        if self.cfg.trivial_augment:
            from imgcls.deps import require

            v2 = require("torchvision.transforms.v2", feature="TrivialAugment")
            self._trivial = v2.TrivialAugmentWide()
        self._mix: Any = None
        if self.cfg.mixup_alpha > 0 or self.cfg.cutmix_alpha > 0:
            from imgcls.deps import require

            v2 = require("torchvision.transforms.v2", feature="mixup/cutmix")
            mixes = []
            if self.cfg.mixup_alpha > 0:
                mixes.append(v2.MixUp(alpha=self.cfg.mixup_alpha, num_classes=self.num_classes))
            if self.cfg.cutmix_alpha > 0:
                mixes.append(v2.CutMix(alpha=self.cfg.cutmix_alpha, num_classes=self.num_classes))
            self._mix = mixes[0] if len(mixes) == 1 else v2.RandomChoice(mixes)

    @property
    def soft_targets(self) -> bool:
        """True when targets come back as (N, num_classes) probabilities (mixup/cutmix)."""
        return self._mix is not None

    def normalize(self, images: Any) -> Any:
        """``uint8`` ``(N, C, H, W)`` (any memory format) -> normalised ``float32``, memory format preserved."""
        return images.float().mul_(self._scale).add_(self._shift)

    def __call__(self, images: Any, labels: Any, generator: Any) -> tuple[Any, Any]:
        """Augment a uint8 ``(N, H, W, C)`` batch; ``generator`` (a torch.Generator on the CPU) drives all draws.

        Returns the normalised ``float32`` ``(N, C, H, W)`` batch (channels-last memory) and the targets.
        """
        import torch

        x = images.permute(0, 3, 1, 2)  # NCHW view of NHWC memory = channels_last
        n = x.shape[0]
        if self.cfg.crop_padding > 0:
            x = random_crop(x, self.cfg.crop_padding, generator)
        if self.cfg.hflip:
            flip = to_device(torch.rand(n, generator=generator) < 0.5, x.device)
            x = torch.where(flip.view(n, 1, 1, 1), x.flip(3), x)
        if self._trivial is not None:
            x = self._trivial_augment(x, generator)
        x = self.normalize(x).contiguous(memory_format=torch.channels_last)
        if self._mix is not None:
            # torchvision's mixup/cutmix draw from torch's global generator: seed it from ours.
            torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
            x, labels = self._mix(x, labels)
            x = x.contiguous(memory_format=torch.channels_last)
        return x, labels

    def _trivial_augment(self, x: Any, generator: Any) -> Any:
        import torch

        torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
        n = x.shape[0]
        group = max(1, -(-n // _TRIVIAL_GROUPS))
        parts = [self._trivial(x[i : i + group].contiguous()) for i in range(0, n, group)]
        return torch.cat(parts)


def random_crop(x: Any, padding: int, generator: Any) -> Any:
    """Per-image random translation by up to ``padding`` pixels with zero fill, i.e. pad-then-crop.

    ``x`` is ``(N, C, H, W)`` of any dtype; the result has the same shape. The batch is padded by one zero pixel a
    side, not by ``padding``: a source row or column past the image's edge reads that zero border, so the memory
    is the batch's whatever ``padding`` is (padded by 1024 a side, 16 px images took ~2 GB a batch) and every
    shift gives what padding by ``padding`` gave.
    """
    import torch
    import torch.nn.functional as F

    n, _, h, w = x.shape
    padded = F.pad(x, (1, 1, 1, 1))
    dy = to_device(torch.randint(0, 2 * padding + 1, (n,), generator=generator), x.device)
    dx = to_device(torch.randint(0, 2 * padding + 1, (n,), generator=generator), x.device)
    # the source row/column of each output pixel in the padded batch: 0 and h + 1 are the zero border
    rows = (dy[:, None] + torch.arange(1 - padding, h + 1 - padding, device=x.device)).clamp_(0, h + 1)
    cols = (dx[:, None] + torch.arange(1 - padding, w + 1 - padding, device=x.device)).clamp_(0, w + 1)
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chans = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return padded[batch, chans, rows[:, None, :, None], cols[:, None, None, :]]


def to_device(draws: Any, device: Any) -> Any:
    """Move a small tensor drawn on the host (the CPU generator's crop offsets, flip mask) to ``device``.

    A plain ``.to("cuda")`` from pageable memory waits until every kernel already queued on the stream has
    finished, so one per step would stop the GPU from running ahead of the host. Staged in pinned memory and
    copied with ``non_blocking``, the copy is queued like a kernel (the caching host allocator keeps the pinned
    buffer until the copy is done). On the CPU the tensor is returned as it is.
    """
    if getattr(device, "type", str(device).split(":")[0]) != "cuda":
        return draws
    return draws.pin_memory().to(device, non_blocking=True)
