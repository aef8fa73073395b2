#!/usr/bin/env python
"""`saliency-ssl train-surrogate`, kept as a script: see saliencyssl/app/train_surrogate.py (and its --help)."""

import sys

from saliencyssl.app.train_surrogate import main

if __name__ == "__main__":
    sys.exit(main())
