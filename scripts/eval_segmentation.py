#!/usr/bin/env python
"""`saliency-ssl segment`, kept as a script: see saliencyssl/app/segment.py (`saliency-ssl segment --help`)."""

import sys

from saliencyssl.app.segment import main

if __name__ == "__main__":
    sys.exit(main())
