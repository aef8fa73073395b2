"""The one registry of self-supervised methods: name -> class, and :func:`build_method`."""

from __future__ import annotations

from typing import Any

from torch import nn

from saliencyssl.ssl.barlowtwins import BarlowTwins
from saliencyssl.ssl.byol import BYOL
from saliencyssl.ssl.detcon import DetConBYOL, DetConSimCLR
from saliencyssl.ssl.method import SSLMethod
from saliencyssl.ssl.moco import MoCo
from saliencyssl.ssl.simclr import SimCLR
from saliencyssl.ssl.simsiam import SimSiam
from saliencyssl.ssl.swav import SwAV
from saliencyssl.text import short_repr

#: Every method by its registry name (``SSLMethod.name``). All train with lightly's CIFAR-10 recipe
#: (:mod:`saliencyssl.ssl.optim`); DetCon's two methods take SimCLR's and BYOL's (DetCon itself uses
#: LARS at batch 4096, see :mod:`saliencyssl.ssl.detcon`) and need each view's targets
#: (:attr:`SSLMethod.needs_targets`).
METHODS: dict[str, type[SSLMethod]] = {cls.name: cls for cls in (SimCLR, SimSiam, BYOL, MoCo, SwAV, BarlowTwins,
                                                                  DetConSimCLR, DetConBYOL)}


def _key(name: str) -> str:
    """A method name without case, ``-`` and ``_``."""
    return name.strip().lower().replace("-", "").replace("_", "")


_BY_KEY: dict[str, type[SSLMethod]] = {_key(name): cls for name, cls in METHODS.items()}
_BY_KEY["mocov2"] = MoCo


def build_method(name: str, backbone: nn.Module, *, distributed: bool = False, **overrides: Any) -> SSLMethod:
    """Build a registered method around ``backbone``.

    Args:
        name: one of :data:`METHODS` (case-insensitive; ``-``/``_`` ignored, so ``"barlow_twins"``,
            ``"MoCo"`` and ``"detcon_simclr"`` work).
        backbone: the network to train, mapping images to ``(B, feature_dim)`` features.
        distributed: gather across processes where the loss needs the global batch.
        **overrides: hyperparameters replacing the method's :meth:`~SSLMethod.default_hparams`.

    Raises:
        ValueError: unknown method name (the message lists the registered ones), or an unknown
            or invalid hyperparameter.

    Examples:
        >>> method = build_method("moco", resnet18_backbone(cifar_stem=True), memory_bank_size=8192)
    """
    return method_class(name)(backbone, distributed=distributed, **overrides)


def method_class(name: str) -> type[SSLMethod]:
    """The registered class for ``name`` (spelled as :func:`build_method` accepts it).

    Raises:
        ValueError: unknown method name (the message lists the registered ones).
    """
    if not isinstance(name, str):
        raise ValueError(f"method name must be a string, one of {sorted(METHODS)}; got {name!r}")
    cls = _BY_KEY.get(_key(name))
    if cls is None:
        raise ValueError(f"unknown SSL method {name!r}; choose one of {sorted(METHODS)}")
    return cls


def check_method_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """The hyperparameters ``name`` would be built with under ``options``, checked without building
    anything (so a script can refuse a bad ``--method-option`` before loading its data).

    ``feature_dim`` is not an option: the backbone fixes it (512 for the ResNet-18).

    Raises:
        ValueError: unknown method, unknown hyperparameter, ``feature_dim``, or invalid value.
    """
    cls = method_class(name)
    if "feature_dim" in options:
        raise ValueError(f"{cls.name}: feature_dim is set by the backbone (512 for the ResNet-18), not an option")
    valid = {k: v for k, v in cls.default_hparams().items() if k != "feature_dim"}
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"{cls.name}: unknown hyperparameter(s) {short_repr(unknown)}; valid ones are {sorted(valid)} (defaults: {valid})")
    return cls._resolve_hparams(options)


def changed_method_options(name: str, options: dict[str, Any] | None) -> dict[str, Any]:
    """The options that differ from ``name``'s defaults (so giving a default explicitly changes nothing):
    what two runs are compared by.

    Raises:
        ValueError: as :func:`check_method_options`.
    """
    defaults = method_class(name).default_hparams()
    return {k: v for k, v in check_method_options(name, dict(options or {})).items() if v != defaults[k]}
