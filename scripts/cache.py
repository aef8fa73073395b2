#!/usr/bin/env python
"""`saliency-ssl cache`, kept as a script: see saliencyssl/app/cache.py (`saliency-ssl cache --help`)."""

import sys

from saliencyssl.app.cache import main

if __name__ == "__main__":
    sys.exit(main())
