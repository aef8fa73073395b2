#!/usr/bin/env python
"""`saliency-ssl quickstart`, kept as a script: see saliencyssl/app/quickstart.py (`saliency-ssl quickstart --help`)."""

import sys

from saliencyssl.app.quickstart import main

if __name__ == "__main__":
    sys.exit(main())
