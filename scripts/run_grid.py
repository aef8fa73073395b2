#!/usr/bin/env python
"""`saliency-ssl grid`, kept as a script: see saliencyssl/app/grid.py (`saliency-ssl grid --help`)."""

import sys

from saliencyssl.app.grid import main

if __name__ == "__main__":
    sys.exit(main())
