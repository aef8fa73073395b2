#!/usr/bin/env python
"""`saliency-ssl fidelity`, kept as a script: see saliencyssl/app/fidelity.py (`saliency-ssl fidelity --help`)."""

import sys

from saliencyssl.app.fidelity import main

if __name__ == "__main__":
    sys.exit(main())
