"""``python -m saliencyssl <stage> ...``, the same as the ``saliency-ssl`` command (and what ``torchrun -m`` runs)."""

import sys

from saliencyssl.app.cli import main

sys.exit(main())
