#!/usr/bin/env python
"""`saliency-ssl views`, kept as a script: see saliencyssl/app/views.py (`saliency-ssl views --help`)."""

import sys

from saliencyssl.app.views import main

if __name__ == "__main__":
    sys.exit(main())
