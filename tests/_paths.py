"""Where the real data of the tests lives: ``../shared`` beside the checkout, or $SALIENCYSSL_SHARED."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SALIENCYSSL_SHARED") or REPO.parent / "shared")
MISSING_REASON = "needs real data at {path} (the ../shared folder beside the checkout, or set SALIENCYSSL_SHARED)"
