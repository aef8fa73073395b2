#!/usr/bin/env python
"""`saliency-ssl label`, kept as a script: see saliencyssl/app/label.py (`saliency-ssl label --help`)."""

import sys

from saliencyssl.app.label import main

if __name__ == "__main__":
    sys.exit(main())
