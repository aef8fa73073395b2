"""The labeller's command-line options, shared by every script that needs a labeller fingerprint.

``scripts/label.py`` fills a cache under the fingerprint of these options; every other script
(pretraining, the surrogate, the views, the cache tool) must name the same options to find those
targets again, so they all declare them here, with one set of defaults.
"""

from __future__ import annotations

import argparse

from saliencyssl.saliency.labeller import LabellerConfig
from saliencyssl.saliency.params import CUT_ENGINES, LABELLER_OPTIONS, describe_params  # noqa: F401

_DEFAULTS = LabellerConfig()


def add_labeller_options(parser: argparse.ArgumentParser, title: str | None = None,
                         optional: bool = False) -> argparse._ArgumentGroup:
    """Add ``--scale | --max-side``, ``--min-side`` and ``--cut-engine`` to a parser.

    Args:
        parser: the script's parser.
        title: the option group's title (default: says they must match how the cache was filled).
        optional: leave every default ``None``, so :func:`labeller_config_from_args` can tell
            "not given" (the script then picks the fingerprint another way) from the defaults.
    """
    group = parser.add_argument_group(title or "labeller options (must match how the cache was filled by "
                                               "scripts/label.py; they select the labeller fingerprint)")
    size = group.add_mutually_exclusive_group()
    size.add_argument("--scale", type=float, default=None, metavar="F",
                      help="label at F times the image size (the paper's 100%% = 1, 200%% = 2); default: upscale "
                           "images under --min-side only")
    size.add_argument("--max-side", type=int, default=None, metavar="N",
                      help="shrink images whose longer side exceeds N pixels before labelling")
    group.add_argument("--min-side", type=int, default=None if optional else _DEFAULTS.min_side, metavar="N",
                       help=f"upscale images whose shorter side is under N pixels (default {_DEFAULTS.min_side}; "
                            f"ignored with --scale)")
    group.add_argument("--cut-engine", choices=CUT_ENGINES, default=None if optional else _DEFAULTS.cut_engine,
                       help="faithful: Cheng's own GrabCut (matches the C++ masks); opencv: cv2.grabCut in the same "
                            f"loop (agrees less). Default: {_DEFAULTS.cut_engine}")
    return group


def labeller_config_from_args(args: argparse.Namespace) -> LabellerConfig | None:
    """The :class:`LabellerConfig` of the parsed options; ``None`` when added with ``optional=True``
    and none was given."""
    given = {k: getattr(args, k) for k in LABELLER_OPTIONS}
    if all(v is None for v in given.values()):
        return None
    return LabellerConfig(**{k: v for k, v in given.items() if v is not None})
