"""A small CNN teacher for image sources, trained by the framework on the labeled training rows.

Its embedding (what LELP reads) is the output of the hidden fully connected layer, the input of its final
linear layer. The trained weights are cached next to the teacher cache, keyed by the teacher, the data and
the labeled subset, so a second run loads them instead of training again.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch
from torch import nn

from lelp_lightning import fileio
from lelp_lightning.cache import PassTarget, TeacherCache, cache_key
from lelp_lightning.core import Source, SplitData, fingerprint_of, rows_fingerprint
from lelp_lightning.errors import LelpError
from lelp_lightning.sources.images import scale_pixels
from lelp_lightning.teachers.base import Teacher

log = logging.getLogger(__name__)


class _ConvNet(nn.Module):
    """conv3×3 → ReLU → max-pool 2 per block, then a hidden FC layer (the embedding) and the linear classifier."""

    def __init__(self, image_shape: tuple[int, int], channels: list[int], hidden: int, num_classes: int):
        super().__init__()
        layers: list[nn.Module] = []
        prev, (h, w) = 1, image_shape
        for c in channels:
            layers += [nn.Conv2d(prev, c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            prev, h, w = c, h // 2, w // 2
        if h < 1 or w < 1:
            raise LelpError(f"CNNTeacher: {len(channels)} conv blocks halve {list(image_shape)} images to nothing; "
                            "use fewer channels entries.")
        self.features = nn.Sequential(*layers, nn.Flatten(), nn.Linear(prev * h * w, hidden), nn.ReLU())
        self.out = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.features(x)
        return h, self.out(h)

    def conv_maps(self, x: torch.Tensor) -> torch.Tensor:
        """The last conv block's feature maps [B, channels, h, w] (what the hidden FC layer reads, flattened)."""
        return self.features[:-3](x)


class CNNTeacher(Teacher, name="cnn", description="A small CNN trained on the training split's images."):
    """A small CNN trained with Adam on the training split's images (its labeled rows only, if given).

    Deterministic under ``seed`` (initialisation and batch order). ``threads`` sets torch's CPU threads while
    it trains (``None``: torch's default, one per core).
    """

    def __init__(self, channels: tuple[int, ...] = (32, 64), hidden: int = 128, epochs: int = 4, lr: float = 1e-3,
                 train_batch_size: int = 256, batch_size: int = 1024, mean: float = 0.0, std: float = 1.0,
                 threads: int | None = None, seed: int = 0):
        if not channels or min(channels) < 1 or hidden < 1 or epochs < 1:
            raise LelpError(f"CNNTeacher needs channels >= 1 (at least one block), hidden >= 1 and epochs >= 1, "
                            f"got channels={channels}, hidden={hidden}, epochs={epochs}.")
        self.channels = [int(c) for c in channels]
        self.hidden = hidden
        self.epochs = epochs
        self.lr = lr
        self.train_batch_size = train_batch_size
        self.batch_size = batch_size
        self.mean = mean
        self.std = std
        self.threads = threads
        self.seed = seed
        self._net: _ConvNet | None = None

    def fingerprint(self) -> str:
        return fingerprint_of("CNNTeacher", {k: v for k, v in vars(self).items()
                                             if not k.startswith("_") and k not in ("batch_size", "threads")})

    def fit(self, source: Source, cache: TeacherCache, labeled: np.ndarray | None = None) -> None:
        """Train on the training rows in ``labeled`` (default: all), or load the weights a previous run saved."""
        train = source.split("train")
        if not isinstance(train.texts, np.ndarray) or train.texts.ndim != 3:
            raise LelpError(f"CNNTeacher reads images, but the source {type(source).__name__} yields texts; "
                            "use an image source (lelp_lightning.sources: FashionMNIST, Digits).")
        subset = [] if labeled is None else ["labeled-" + rows_fingerprint(labeled)]
        weights = cache.root / f"cnn-{cache_key(self.fingerprint(), source.fingerprint(), *subset)}.pt"
        rows = np.arange(len(train)) if labeled is None else np.asarray(labeled)
        with torch.random.fork_rng():
            torch.manual_seed(self.seed)
            self._net = _ConvNet(train.texts.shape[1:], self.channels, self.hidden, source.num_classes)
        if weights.is_file():
            self._net.load_state_dict(torch.load(weights, weights_only=True))
        else:
            self._train(train.texts[rows], train.labels[rows])
            cache.root.mkdir(parents=True, exist_ok=True)
            fileio.atomic_write(weights, lambda handle: torch.save(self._net.state_dict(), handle))
        self._net.eval()

    def _train(self, images: np.ndarray, labels: np.ndarray) -> None:
        x = torch.from_numpy(scale_pixels(images, self.mean, self.std))
        y = torch.from_numpy(np.asarray(labels, dtype=np.int64))
        gen = torch.Generator().manual_seed(self.seed)
        opt = torch.optim.Adam(self._net.parameters(), lr=self.lr)
        threads = torch.get_num_threads()
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        start = time.perf_counter()
        self._net.train()
        try:
            for epoch in range(self.epochs):
                perm = torch.randperm(len(y), generator=gen)
                for lo in range(0, len(y), self.train_batch_size):
                    idx = perm[lo: lo + self.train_batch_size]
                    loss = nn.functional.cross_entropy(self._net(x[idx])[1], y[idx])
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                log.info("CNN teacher epoch %d/%d on %d images: last batch loss %.4f (%.0f s)", epoch + 1,
                         self.epochs, len(y), loss.item(), time.perf_counter() - start)
        finally:
            torch.set_num_threads(threads)

    def _require_net(self) -> _ConvNet:
        if self._net is None:
            raise RuntimeError("CNNTeacher.fit must run before the teacher is used.")
        return self._net

    @torch.inference_mode()
    def encode(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(embedding [B,hidden], logits [B,C]) of uint8 images [B,H,W]."""
        net = self._require_net()
        device = next(net.parameters()).device  # the CPU, or the device a Lightning teacher pass put it on
        h, logits = net(torch.from_numpy(scale_pixels(np.asarray(images), self.mean, self.std)).to(device))
        return h.float().cpu().numpy(), logits.float().cpu().numpy()

    def encode_rows(self, split: SplitData, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.encode(split.texts[index])

    def representations(self) -> dict[str, str]:
        return {"conv": "the last conv block's feature maps, flattened (the hidden FC layer's input)",
                "conv_pooled": "the last conv block's feature maps averaged over the image (one value per channel)"}

    def representation_target(self, name: str, source: Source, split: str, key: str) -> PassTarget:
        if name not in self.representations():
            return super().representation_target(name, source, split, key)
        data = source.split(split)
        dim = self.conv_features(data.texts[:1], name).shape[1]
        return self._features_target(name, data, key, dim, {"split": split},
                                     lambda index: self.conv_features(data.texts[index], name))

    @torch.inference_mode()
    def conv_features(self, images: np.ndarray, name: str) -> np.ndarray:
        """Representation ``name`` (``conv`` or ``conv_pooled``) of uint8 images [B,H,W]."""
        net = self._require_net()
        x = torch.from_numpy(scale_pixels(np.asarray(images), self.mean, self.std)).to(next(net.parameters()).device)
        maps = net.conv_maps(x)
        return (maps.flatten(1) if name == "conv" else maps.mean((2, 3))).float().cpu().numpy()

    def modules(self) -> list[nn.Module]:
        return [self._require_net()]

    def classifier(self) -> tuple[np.ndarray, np.ndarray]:
        out = self._require_net().out
        return out.weight.detach().cpu().numpy().copy(), out.bias.detach().cpu().numpy().copy()
