"""Files from others that claim more than they hold: surrogate checkpoints whose weights are views of a
smaller storage or whose architecture is oversized, grid configs that are devices, pipes, huge files
or very long lists, and pack parameters that JSON reads as infinity."""

from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from saliencyssl.app.grid import MAX_CONFIG_BYTES, MAX_GRID_ENTRIES, GridConfig
from saliencyssl.cache.packfile import PackError, open_pack, write_pack
from saliencyssl.saliency import LabellerConfig
from saliencyssl.surrogate.model import Surrogate, SurrogateCheckpointError
from saliencyssl.surrogate.networks import MAX_GENERATOR_PARAMETERS, Architecture
from saliencyssl.target import Target

FP = "0123456789abcdef"


# -- surrogate checkpoints ---------------------------------------------------------------------------
def _checkpoint(tmp_path: Path) -> tuple[Path, dict]:
    path = Surrogate.fresh(32, FP, seed=0, ngf=4).save(tmp_path / "surrogate.pt")
    return path, torch.load(path, weights_only=True)


def _conv_key(blob: dict) -> str:
    return next(k for k, v in blob["generator"].items() if v.ndim == 4 and v.shape[0] > 1 and v.shape[1] > 1)


def test_a_stride_0_weight_is_refused_before_anything_of_its_claimed_size_exists(tmp_path):
    path, blob = _checkpoint(tmp_path)
    key = _conv_key(blob)
    shape = blob["generator"][key].shape
    blob["generator"][key] = torch.zeros(1).expand(shape)
    torch.save(blob, tmp_path / "expanded.pt")
    # torch.save keeps the view as it is: one value behind a full shape.
    assert torch.load(tmp_path / "expanded.pt", weights_only=True)["generator"][key].untyped_storage().nbytes() == 4
    with pytest.raises(SurrogateCheckpointError, match=rf"expanded\.pt: .*{key}.*holds less data than its weights "
                                                       rf"claim"):
        Surrogate.load(tmp_path / "expanded.pt")
    assert Surrogate.load(path).arch == Architecture.from_dict(blob["arch"])  # the honest file still loads


def test_a_non_contiguous_weight_is_refused_and_a_channels_last_one_kept(tmp_path):
    path, blob = _checkpoint(tmp_path)
    key = _conv_key(blob)
    weight = blob["generator"][key]
    blob["generator"][key] = weight.transpose(0, 1).contiguous().transpose(0, 1)  # same values, permuted strides
    assert not blob["generator"][key].is_contiguous()
    torch.save(blob, tmp_path / "strided.pt")
    with pytest.raises(SurrogateCheckpointError, match=rf"strided\.pt: .*{key}.*holds less data"):
        Surrogate.load(tmp_path / "strided.pt")
    blob["generator"][key] = weight.contiguous(memory_format=torch.channels_last)
    torch.save(blob, tmp_path / "channels_last.pt")
    loaded = Surrogate.load(tmp_path / "channels_last.pt")
    assert torch.equal(loaded.generator.state_dict()[key], weight)


def test_an_oversized_architecture_is_refused_from_its_shapes_alone(tmp_path):
    default = sum(math.prod(s) for s, _ in Architecture(32).generator_shapes().values())
    assert 500_000 < default < MAX_GENERATOR_PARAMETERS // 50  # the default ngf 16 generator: about 1 M
    _, blob = _checkpoint(tmp_path)
    arch = Architecture.from_dict({**blob["arch"], "ngf": 192})  # 150 M parameters: 600 MB of float32
    # weights of exactly the claimed shapes, each a stride-0 view of one value: a file of a few KB
    blob.update(arch=arch.as_dict(), generator={k: torch.zeros((), dtype=dtype).expand(shape)
                                                for k, (shape, dtype) in arch.generator_shapes().items()})
    torch.save(blob, tmp_path / "wide.pt")
    assert (tmp_path / "wide.pt").stat().st_size < 100_000
    with pytest.raises(SurrogateCheckpointError, match=r"wide\.pt: the recorded architecture .* has 149,898,748 "
                                                       r"generator parameters, above the limit of 100,000,000"):
        Surrogate.load(tmp_path / "wide.pt")


# -- grid configs ------------------------------------------------------------------------------------
def _grid(tmp_path: Path, **overrides) -> Path:
    config = {"name": "tiny", "out": str(tmp_path / "grid"), "train": str(tmp_path / "train"),
              "test": str(tmp_path / "test"), "cache": str(tmp_path / "cache"), "methods": ["simclr"],
              "policies": ["default"], **overrides}
    path = tmp_path / "grid.json"
    path.write_text(json.dumps(config))
    return path


def test_a_grid_config_that_is_a_device_or_a_pipe_is_one_line_naming_it(tmp_path):
    with pytest.raises(ValueError, match=r"^/dev/zero: not a regular file"):
        GridConfig.load("/dev/zero")
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "config.json")  # opened without blocking, then refused
        with pytest.raises(ValueError, match=r"config\.json: not a regular file"):
            GridConfig.load(tmp_path / "config.json")


def test_a_grid_config_over_the_size_limit_is_refused_unread(tmp_path):
    path = _grid(tmp_path)
    text = path.read_text()
    path.write_text(text[:-1] + " " * MAX_CONFIG_BYTES + "}")  # valid JSON, too large
    with pytest.raises(ValueError, match=rf"grid\.json: larger than the {MAX_CONFIG_BYTES:,} bytes"):
        GridConfig.load(path)


@pytest.mark.parametrize("key", ["methods", "policies", "cells", "baselines"])
def test_grid_lists_longer_than_the_limit_are_refused(tmp_path, key):
    entry = ["simclr", "default"] if key == "cells" else "simclr"
    extra = {"methods": [], "policies": []} if key == "cells" else {}
    path = _grid(tmp_path, **{**extra, key: [entry] * (MAX_GRID_ENTRIES + 1)})
    with pytest.raises(ValueError, match=rf"grid\.json: {key} lists {MAX_GRID_ENTRIES + 1:,} entries; give at most"):
        GridConfig.load(path)


def test_repeats_in_a_long_grid_list_are_found(tmp_path):
    names = [f"m{i}" for i in range(MAX_GRID_ENTRIES - 2)] + ["m7", "m9"]
    with pytest.raises(ValueError, match=r"grid\.json: methods lists m7, m9 more than once"):
        GridConfig.load(_grid(tmp_path, methods=names))


# -- pack parameters ---------------------------------------------------------------------------------
def test_pack_parameters_that_json_reads_as_infinity_are_a_pack_error_naming_the_file(tmp_path):
    rng = np.random.default_rng(0)
    target = Target.from_maps(rng.random((8, 8)), rng.random((8, 8)) > 0.5, rng.integers(0, 3, (8, 8)))
    params = LabellerConfig().params()
    pack = write_pack(tmp_path / "p.pack", [(f"{1:032x}", target)], LabellerConfig().fingerprint(), params)
    data = bytearray(pack.read_bytes())
    (length,) = struct.unpack("<Q", data[8:16])
    header = json.loads(data[16:16 + length])
    first = min(spec["offset"] for spec in header["arrays"].values())
    name = next(k for k, v in params.items() if type(v) is float)
    body = json.dumps(header).replace(f'"{name}": {params[name]!r}', f'"{name}": 1e400').encode()
    assert b"1e400" in body and 16 + len(body) <= first
    data[8:16] = struct.pack("<Q", len(body))
    data[16:first] = body + bytes(first - 16 - len(body))
    pack.write_bytes(bytes(data))
    with pytest.raises(PackError, match=rf"p\.pack: damaged pack header.*params\.{name} = inf is not a finite number"):
        open_pack(pack)
    with pytest.raises(PackError, match="labeller parameters a pack cannot hold"):  # nor can a writer record one
        write_pack(tmp_path / "q.pack", [(f"{1:032x}", target)], LabellerConfig().fingerprint(),
                   {**params, name: [1.0, float("inf")]})


def test_a_backbone_weight_stored_as_one_expanded_value_is_refused(tmp_path):
    """``torch.zeros(()).expand(shape)`` is saved as one value and would load as a constant weight."""
    from saliencyssl.ssl.backbone import BackboneCheckpointError, load_backbone, resnet18_backbone

    state = {k: v.clone() for k, v in resnet18_backbone(cifar_stem=True).state_dict().items()}
    shape = state["layer4.1.conv2.weight"].shape
    state["layer4.1.conv2.weight"] = torch.zeros(()).expand(shape)
    path = tmp_path / "expanded.pt"
    torch.save({"state_dict": state, "config": {"cifar_stem": True, "image_size": 32}}, path)
    with pytest.raises(BackboneCheckpointError, match="expanded.pt: weight layer4.1.conv2.weight claims"):
        load_backbone(path)
