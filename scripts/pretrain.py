#!/usr/bin/env python
"""`saliency-ssl pretrain`, kept as a script: see saliencyssl/app/pretrain.py (`saliency-ssl pretrain --help`)."""

import sys

from saliencyssl.app.pretrain import main

if __name__ == "__main__":
    sys.exit(main())
