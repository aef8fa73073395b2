#!/usr/bin/env python
"""`saliency-ssl evaluate`, kept as a script: see saliencyssl/app/evaluate.py (`saliency-ssl evaluate --help`)."""

import sys

from saliencyssl.app.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
