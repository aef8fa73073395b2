"""The trained surrogate: a Pix2Pix generator with the metadata that says what it learned.

:class:`Surrogate` is what the router calls for images the cache misses. It meets the
:class:`~saliencyssl.augment.predictor.TargetPredictor` protocol: ``image_size``,
``fingerprint`` and a batched :meth:`Surrogate.predict` that takes ``(B, 3, S, S)`` uint8
images on any device and returns a :class:`~saliencyssl.target.TargetBatch` on that device
(no gradients; fp16 autocast on CUDA, bf16 on CPUs that compute it natively).

A surrogate travels as one ``torch.save`` file (``RUN_DIR/surrogate.pt``), a dict::

    format            "saliency-ssl-surrogate"      (CHECKPOINT_FORMAT)
    format_version    1
    image_size        S, the side of the square images it takes
    target_channels   ["saliency", "mask", "boundary"]  (TARGET_CHANNELS when it was trained)
    fingerprint       the labeller fingerprint whose targets it learned
    labeller_params   that labeller's parameters (or None)
    arch              Architecture.as_dict(): ngf, max_mult, depth, dropout_blocks, ndf, d_layers,
                      head (a record without head is a generator from before the
                      full-resolution head: Architecture.from_dict reads it as head 0); older
                      records also hold coords and out_channels, read when they have this
                      generator's values (false, 3) and refused otherwise
    generator         the generator's state dict (CPU tensors)
    meta              training record: epoch, step, seconds, training-set size and hashes digest,
                      held-out fidelity, the command's options ...

Training checkpoints (``RUN_DIR/last.pt``) hold the same keys plus the discriminator, the
optimiser and scaler states and the trainer's counters, so either file loads here (a ``last.pt``
that also holds a moving average of the weights, key ``ema``, written by the experiments' weight
average or by older runs, loads as that average, the generator its run evaluated).
:meth:`Surrogate.load` refuses, with a message saying which, a file that is not a surrogate
checkpoint, one for another image size, target layout or labeller fingerprint, a generator with
an option that left the product (coordinate channels, a fourth output), a record field of the
wrong type, an architecture beyond :data:`~saliencyssl.surrogate.networks.ARCH_LIMITS`, weights
that do not fit the recorded architecture (compared key by key and shape by shape before the
network is built, so a record cannot make the loader allocate more than the file holds) and
weights that are NaN or infinite. Every refusal is one :class:`SurrogateCheckpointError` naming
the file.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from saliencyssl.files import temporary_beside
from saliencyssl.precision import autocast_dtype
from saliencyssl.surrogate.networks import (MAX_GENERATOR_PARAMETERS, Architecture, RetiredArchitectureError,
                                            UNetGenerator, build_networks, image_to_input, parameter_count,
                                            to_probabilities)
from saliencyssl.target import TARGET_CHANNELS, TargetBatch
from saliencyssl.text import short_repr
from saliencyssl.torchfiles import UnsafeTorchFileError, load_torch_file

CHECKPOINT_FORMAT = "saliency-ssl-surrogate"
FORMAT_VERSION = 1
#: Images per forward pass inside :meth:`Surrogate.predict` (larger batches are split).
DEFAULT_MAX_BATCH = 1024


class MissingSurrogateError(FileNotFoundError):
    """No surrogate checkpoint at the path given (``fix``: train one)."""

    fix = "train-surrogate"


class SurrogateCheckpointError(ValueError):
    """A surrogate checkpoint that cannot be used here; the message names the file and says why.

    Every such file is replaced by training a surrogate again (``fix``, which the application turns
    into its command). ``image_size`` is the size the new one must be trained at when the file was
    refused for its size (else ``None``); ``relabel`` is True when the cache must first be labelled
    with other labeller options.
    """

    def __init__(self, message: str, image_size: int | None = None, relabel: bool = False, retrain: bool = True):
        super().__init__(message)
        self.image_size = image_size
        self.relabel = relabel
        self.fix = "train-surrogate" if retrain else None  # None: the message says what to do (a run to resume)


def checkpoint_dict(generator: UNetGenerator, fingerprint: str, labeller_params: dict | None,
                    meta: dict | None = None, **extra: Any) -> dict:
    """The dict a surrogate checkpoint holds (see the module docstring); ``extra`` keys are added."""
    arch = generator.arch
    state = {k: v.detach().to("cpu", copy=True) for k, v in generator.state_dict().items()}
    return {"format": CHECKPOINT_FORMAT, "format_version": FORMAT_VERSION, "image_size": int(arch.image_size),
            "target_channels": list(TARGET_CHANNELS), "fingerprint": str(fingerprint),
            "labeller_params": labeller_params, "arch": arch.as_dict(), "generator": state, "meta": dict(meta or {}),
            **extra}


def save_checkpoint(path: str | Path, blob: dict) -> Path:
    """Write a checkpoint dict atomically (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with temporary_beside(path) as tmp:
        torch.save(blob, tmp)
    return path


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load and check a surrogate checkpoint's dict (format and target layout).

    Raises:
        FileNotFoundError: no such file.
        SurrogateCheckpointError: not a surrogate checkpoint, another format version or another
            target layout.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingSurrogateError(f"surrogate checkpoint {path} not found (training a surrogate writes "
                                    f"RUN_DIR/surrogate.pt)")
    try:
        with warnings.catch_warnings():  # a foreign pickle's protocol is no news: it is refused below
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            blob = load_torch_file(path, map_location)  # checked: nothing that crashes or stalls the loader
    except Exception as error:  # pickle errors, zip errors, foreign objects
        raise SurrogateCheckpointError(_unreadable(path, error)) from None
    if not isinstance(blob, dict) or blob.get("format") != CHECKPOINT_FORMAT:
        found = type(blob).__name__ if not isinstance(blob, dict) else f"a dict with keys {sorted(blob)[:8]}"
        raise SurrogateCheckpointError(
            f"{path} is not a surrogate checkpoint (found {found}, expected format {CHECKPOINT_FORMAT!r}); give "
            f"the surrogate.pt or last.pt that training a surrogate writes")
    if blob.get("format_version") != FORMAT_VERSION:
        raise SurrogateCheckpointError(f"{path} is surrogate format version {blob.get('format_version')}, this "
                                       f"saliency-ssl reads version {FORMAT_VERSION}; retrain it")
    layout = tuple(blob.get("target_channels") or ())
    if layout != TARGET_CHANNELS:
        raise SurrogateCheckpointError(
            f"{path} has the wrong target layout: it predicts channels {list(layout)}, this saliency-ssl expects "
            f"{list(TARGET_CHANNELS)}; retrain it")
    return blob


def _unreadable(path: Path, error: Exception) -> str:
    """Our one-line message for a file ``torch.load(weights_only=True)`` refused.

    torch's own message for a pickle holding other objects advises loading it again with
    ``weights_only=False``, which runs whatever code the file carries; a file given as a surrogate
    may come from anyone, so that advice is not passed on (nor is the exception chained).
    """
    text = str(error)
    if isinstance(error, UnsafeTorchFileError):
        why = str(error)
    elif "weights only" in text.lower() or "weights_only" in text:
        why = ("it is a pickle that the safe loader refuses (it holds objects or pickle instructions beyond "
               "tensors, numbers, strings and containers), and saliency-ssl unpickles nothing else, since that "
               "could run code from the file")
    else:
        first = text.strip().splitlines()[0] if text.strip() else ""
        why = (f"it is not a file torch.save writes, or it is damaged ({type(error).__name__}"
               f"{': ' + first[:200] if first else ''})")
    return (f"{path} is not a surrogate checkpoint: {why}; give the surrogate.pt or last.pt that training a "
            f"surrogate writes")


def _checked_record(path: Path, blob: dict) -> tuple[int, str, dict | None, dict]:
    """``(image_size, fingerprint, labeller_params, meta)`` of a checkpoint, each of the type the
    writer gives it.

    Raises:
        SurrogateCheckpointError: a field of another type, or an image size outside
            ``MIN_IMAGE_SIZE..MAX_IMAGE_SIZE`` (the message names the file and the field).
    """
    from saliencyssl.datasets import MAX_IMAGE_SIZE, MIN_IMAGE_SIZE

    size = blob.get("image_size")
    if isinstance(size, bool) or not isinstance(size, int) or not MIN_IMAGE_SIZE <= size <= MAX_IMAGE_SIZE:
        raise SurrogateCheckpointError(f"{path}: image_size must be a whole number of pixels from {MIN_IMAGE_SIZE} "
                                       f"to {MAX_IMAGE_SIZE}, the file says {short_repr(size, 200)}; the file is damaged or "
                                       f"was edited, retrain it")
    fingerprint = blob.get("fingerprint")
    if not isinstance(fingerprint, str):
        raise SurrogateCheckpointError(f"{path}: fingerprint must be the labeller fingerprint as text, the file says "
                                       f"{short_repr(fingerprint, 200)}; the file is damaged or was edited, retrain it")
    params = blob.get("labeller_params")
    meta = blob.get("meta") or {}
    for name, value, kinds in (("labeller_params", params, (dict, type(None))), ("meta", meta, (dict,))):
        if not isinstance(value, kinds):
            raise SurrogateCheckpointError(f"{path}: {name} must be a dict, the file holds "
                                           f"{type(value).__name__}; the file is damaged or was edited, retrain it")
    return size, fingerprint, params, dict(meta)


def _checked_weights(path: Path, blob: dict, arch: Architecture) -> dict[str, torch.Tensor]:
    """The generator's weights of a checkpoint, checked against ``arch`` before any network is built.

    The expected keys, shapes and kinds come from :meth:`Architecture.generator_shapes` (no
    allocation), so a record that claims a huge network is refused here unless the file really
    holds weights of that size; a ``last.pt`` with a weight average (``ema``) gives the average.

    Raises:
        SurrogateCheckpointError: an architecture of more than
            :data:`~saliencyssl.surrogate.networks.MAX_GENERATOR_PARAMETERS` generator parameters,
            weights that are not a dict of tensors, missing or extra keys, a shape or kind (float /
            integer) other than the architecture's, a weight that is not contiguous or whose storage
            holds fewer bytes than its shape claims (a stride-0 ``expand`` view, which ``torch.save``
            keeps as one value), or a weight that is NaN or infinite (such a generator predicts
            nothing: every fidelity score would read 0).
    """
    if "ema" in blob:  # a last.pt with a weight average: the average is what its run evaluated and selected
        source = "ema"
        ema = blob["ema"]
        weights = ({k[len("module."):]: v for k, v in ema.items() if isinstance(k, str) and k.startswith("module.")}
                   if isinstance(ema, dict) else ema)
    else:
        source = "generator"
        weights = blob.get("generator")
    if not isinstance(weights, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                for k, v in weights.items()):
        raise SurrogateCheckpointError(f"{path}: {source} must be a dict of named tensors (a state dict), the file "
                                       f"holds {short_repr(weights)}; the file is damaged or was edited, retrain it")
    expected = arch.generator_shapes()
    missing = [k for k in expected if k not in weights]
    extra = [k for k in weights if k not in expected]
    if missing or extra:
        raise SurrogateCheckpointError(
            f"{path}: the {source} weights do not fit the recorded architecture {arch.as_dict()} (missing "
            f"{missing[:3] or 'none'}{' ...' if len(missing) > 3 else ''}, unexpected {extra[:3] or 'none'}"
            f"{' ...' if len(extra) > 3 else ''}); the file is damaged or was edited, retrain it")
    for key, (shape, dtype) in expected.items():
        tensor = weights[key]
        if tuple(tensor.shape) != shape:
            raise SurrogateCheckpointError(
                f"{path}: the {source} weights do not fit the recorded architecture {arch.as_dict()}: {key} has "
                f"shape {tuple(tensor.shape)}, it needs {shape}; the file is damaged or was edited, retrain it")
        if dtype.is_floating_point != tensor.dtype.is_floating_point or tensor.dtype.is_complex:
            raise SurrogateCheckpointError(f"{path}: {source} weight {key} is {tensor.dtype}, expected "
                                           f"{'a floating-point' if dtype.is_floating_point else 'an integer'} "
                                           f"tensor; the file is damaged or was edited, retrain it")
    # Shapes that fit an oversized record are refused before any computation on the tensors.
    count = parameter_count(expected)
    if count > MAX_GENERATOR_PARAMETERS:
        raise SurrogateCheckpointError(
            f"{path}: the recorded architecture {arch.as_dict()} has {count:,} generator parameters, above the "
            f"limit of {MAX_GENERATOR_PARAMETERS:,} (the default ngf 16 generator has about 1 M); the file is "
            f"damaged or was edited, retrain it")
    for key in expected:
        tensor = weights[key]
        # A view (an expanded or strided tensor) can claim more values than its storage holds:
        # torch.save keeps ``torch.zeros(1).expand(shape)`` as one value, and any computation on
        # it (isfinite, load_state_dict) would allocate what the shape claims. A channels_last
        # conv weight is as dense as a contiguous one and is kept.
        dense = tensor.is_contiguous() or (tensor.ndim == 4
                                           and tensor.is_contiguous(memory_format=torch.channels_last))
        needed = (tensor.storage_offset() + tensor.numel()) * tensor.element_size()
        if not dense or tensor.untyped_storage().nbytes() < needed:
            raise SurrogateCheckpointError(
                f"{path}: {source} weight {key} of shape {tuple(tensor.shape)} needs "
                f"{tensor.numel() * tensor.element_size():,} bytes of contiguous values, the file stores "
                f"{tensor.untyped_storage().nbytes():,} bytes{'' if dense else ' in a strided layout'}: the file "
                f"holds less data than its weights claim; the file is damaged or was edited, retrain it")
        if tensor.dtype.is_floating_point and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise SurrogateCheckpointError(
                f"{path}: {source} weight {key} holds {bad} NaN or infinite value{'s' if bad > 1 else ''}; such a "
                f"generator predicts nothing useful, retrain it (a run whose loss diverged: at a lower learning rate)")
    return weights


class Surrogate:
    """A trained (or fresh) generator that predicts exact targets for uint8 images.

    Args:
        generator: the :class:`~saliencyssl.surrogate.networks.UNetGenerator`.
        fingerprint: the labeller fingerprint whose targets it learned (or imitates).
        labeller_params: that labeller's parameters, if known.
        meta: training record (see the module docstring).
        device: where it runs (default: the generator's device).
        amp: reduced precision during prediction; default on: fp16 autocast on CUDA, bf16
            autocast on a CPU that computes bf16 natively (:func:`saliencyssl.precision.cpu_has_native_bf16`; masks
            agree with float32 on 99.99% of pixels), float32 otherwise. ``False`` forces float32.
        max_batch: images per forward pass inside :meth:`predict`.

    Attributes:
        image_size: side ``S`` of the square images it takes and the targets it returns.
        fingerprint: as above.
        arch: the :class:`~saliencyssl.surrogate.networks.Architecture`.

    Example:
        >>> s = Surrogate.fresh(32, "0123456789abcdef")
        >>> batch = s.predict(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))
        >>> tuple(batch.mask.shape), batch.mask.dtype
        ((2, 1, 32, 32), torch.bool)
    """

    def __init__(self, generator: UNetGenerator, fingerprint: str, labeller_params: dict | None = None,
                 meta: dict | None = None, device: str | torch.device | None = None, amp: bool | None = None,
                 max_batch: int = DEFAULT_MAX_BATCH):
        if device is None:
            device = next(generator.parameters()).device
        self.device = torch.device(device)
        self.generator = generator.to(self.device).eval()
        self.arch: Architecture = generator.arch
        self.image_size: int = int(self.arch.image_size)
        self.fingerprint: str = str(fingerprint)
        self.labeller_params = labeller_params
        self.meta = dict(meta or {})
        self.amp = True if amp is None else bool(amp)
        self.max_batch = int(max_batch)

    # -- construction --------------------------------------------------------------------------
    @classmethod
    def fresh(cls, image_size: int, fingerprint: str = "untrained", device: str | torch.device = "cpu",
              seed: int = 0, **arch_overrides: Any) -> "Surrogate":
        """A freshly initialised surrogate of the default architecture (``arch_overrides`` change it).

        Its predictions are meaningless, but it costs exactly what a trained one of the same
        architecture costs, so benchmarks time it.
        """
        arch = Architecture(int(image_size), **arch_overrides)
        generator, _ = build_networks(arch, seed=seed)
        return cls(generator, fingerprint, device=device)

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu", expect_image_size: int | None = None,
             expect_fingerprint: str | None = None, amp: bool | None = None) -> "Surrogate":
        """Load ``surrogate.pt`` (or a training ``last.pt``).

        Args:
            path: the checkpoint file.
            device: where the surrogate runs.
            expect_image_size: refuse a surrogate trained for another image size.
            expect_fingerprint: refuse a surrogate that learned another labeller's targets.
            amp: see the class.

        Raises:
            FileNotFoundError: no such file.
            SurrogateCheckpointError: not a surrogate checkpoint; wrong target layout, image
                size or labeller fingerprint; a record field of the wrong type; an architecture
                beyond its limits; weights of the wrong shape or kind, or NaN / infinite weights.
                The message names the file and says which.
        """
        path = Path(path)
        blob = read_checkpoint(path)
        size, fingerprint, labeller_params, meta = _checked_record(path, blob)
        if expect_image_size is not None and size != int(expect_image_size):
            raise SurrogateCheckpointError(
                f"{path} has the wrong image size: it was trained on {size}x{size} px images, {expect_image_size} px "
                f"were asked for; train one at that size, or work at {size} px",
                image_size=int(expect_image_size))
        if expect_fingerprint is not None and fingerprint != expect_fingerprint:
            raise SurrogateCheckpointError(
                f"{path} has the wrong labeller fingerprint: it learned the targets of labeller {fingerprint} "
                f"(parameters {labeller_params}), not {expect_fingerprint}; train one on a cache "
                f"labelled with the wanted parameters", relabel=True)
        if not isinstance(blob.get("arch"), dict):
            raise SurrogateCheckpointError(f"{path}: the architecture record is {type(blob.get('arch')).__name__}, "
                                           f"not a dict of sizes; the file is damaged or was edited, retrain it")
        try:
            arch = Architecture.from_dict(blob["arch"])
        except RetiredArchitectureError as error:
            raise SurrogateCheckpointError(
                f"{path}: {error} (arch {error.field}={error.value!r}); retrain it") from None
        except (TypeError, ValueError, KeyError) as error:
            raise SurrogateCheckpointError(f"{path}: architecture record {short_repr(blob.get('arch'), 200)} refused: "
                                           f"{error}; the file is damaged or was edited, retrain it") from None
        if arch.image_size != size:
            raise SurrogateCheckpointError(f"{path}: architecture is for {arch.image_size} px but the checkpoint says "
                                           f"{size} px; the file is inconsistent, retrain it")
        weights = _checked_weights(path, blob, arch)
        # costs what the file's own weights cost (their shapes were checked above); its random initialisation is
        # replaced by them, so it draws from a forked RNG: loading a surrogate leaves the caller's streams as they were
        # (pretraining seeds, then loads it, then builds the backbone its --seed promises)
        with torch.random.fork_rng(devices=[]):
            generator = UNetGenerator(arch)
        try:
            generator.load_state_dict(weights)
        except (RuntimeError, KeyError, TypeError, AttributeError) as error:
            raise SurrogateCheckpointError(
                f"{path}: the weights do not fit the recorded architecture {arch.as_dict()} "
                f"({str(error).strip().splitlines()[-1][:300]}); the file is damaged or was edited, retrain "
                f"it") from None
        meta.setdefault("path", str(path))
        return cls(generator, fingerprint, labeller_params, meta, device=device, amp=amp)

    def save(self, path: str | Path, meta: dict | None = None) -> Path:
        """Write this surrogate as a checkpoint (atomically); ``meta`` is merged into its record."""
        return save_checkpoint(path, checkpoint_dict(self.generator, self.fingerprint, self.labeller_params,
                                                     {**self.meta, **(meta or {})}))

    def to(self, device: str | torch.device) -> "Surrogate":
        """Move to another device (in place); returns self."""
        self.device = torch.device(device)
        self.generator.to(self.device)
        return self

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The autocast dtype :meth:`predict` uses here (``None``: float32)."""
        return autocast_dtype(self.device) if self.amp else None

    # -- inference -----------------------------------------------------------------------------
    def _check(self, images: torch.Tensor) -> None:
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"Surrogate.predict expects a torch tensor, got {type(images).__name__}")
        if images.dtype != torch.uint8:
            raise TypeError(f"Surrogate.predict expects uint8 RGB images (0..255), got {images.dtype}; convert "
                            f"float images in [0, 1] with (x * 255).round().to(torch.uint8)")
        s = self.image_size
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[2] != s or images.shape[3] != s:
            raise ValueError(f"Surrogate.predict expects (B, 3, {s}, {s}) images, got {tuple(images.shape)}; bring "
                             f"images to {s} px with saliencyssl.datasets.fit_square, or load a surrogate trained "
                             f"at their size")

    @torch.inference_mode()
    def predict_channels(self, images: torch.Tensor) -> torch.Tensor:
        """Predicted channel probabilities.

        Args:
            images: ``(B, 3, S, S)`` uint8 RGB on any device.

        Returns:
            ``(B, 3, S, S)`` float32 in [0, 1] on the surrogate's device, in the order of
            :data:`~saliencyssl.target.TARGET_CHANNELS` (saliency, mask, boundary).
        """
        self._check(images)
        self.generator.eval()
        dtype = self.autocast_dtype
        out = []
        for start in range(0, int(images.shape[0]), self.max_batch):
            x = image_to_input(images[start:start + self.max_batch].to(self.device, non_blocking=True))
            if self.device.type == "cpu":
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device_type=self.device.type, dtype=dtype or torch.float32,
                                enabled=dtype is not None):
                logits = self.generator(x)
            out.append(to_probabilities(logits[:, :len(TARGET_CHANNELS)]))
        if not out:
            s = self.image_size
            return torch.zeros(0, len(TARGET_CHANNELS), s, s, device=self.device)
        return torch.cat(out) if len(out) > 1 else out[0]

    @torch.inference_mode()
    def predict(self, images: torch.Tensor) -> TargetBatch:
        """Targets of a batch of images (the :class:`TargetPredictor` call).

        Args:
            images: ``(B, 3, S, S)`` uint8 RGB on any device, ``S == image_size``.

        Returns:
            A :class:`~saliencyssl.target.TargetBatch` of ``(B, 1, S, S)`` tensors on
            ``images.device``: saliency float32 in [0, 1], mask bool (probability > 0.5),
            regions int64 (4-connected components of the non-boundary pixels), as
            :meth:`TargetBatch.from_channels` makes them.
        """
        probabilities = self.predict_channels(images)
        return TargetBatch.from_channels(probabilities).to(images.device)

    __call__ = predict

    def __repr__(self) -> str:
        return (f"Surrogate(image_size={self.image_size}, fingerprint={self.fingerprint!r}, ngf={self.arch.ngf}, "
                f"depth={self.arch.depth}, device={self.device}, amp={self.amp})")
