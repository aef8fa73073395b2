"""Content hashes of decoded images: the key under which a target is stored.

The hash covers the decoded pixels, their shape and dtype, so two files that decode to the
same pixels (a PNG and its re-save) share a key and a file that changes by one pixel does not.
Hashing happens once per image (when a dataset is indexed), never per training iteration.
"""

from __future__ import annotations

import hashlib

import numpy as np

#: Length of a content hash in hex characters (a 128-bit BLAKE2b digest).
HASH_HEX_LENGTH = 32


def content_hash(image: np.ndarray) -> str:
    """Hex digest of an image's decoded pixels, shape and dtype.

    Args:
        image: any numpy array; in saliency-ssl, an ``(H, W, 3)`` uint8 RGB image.

    Returns:
        A 32-character lowercase hex string.

    Example:
        >>> content_hash(np.zeros((2, 2, 3), np.uint8)) == content_hash(np.zeros((2, 2, 3), np.uint8))
        True
    """
    image = np.ascontiguousarray(image)
    digest = hashlib.blake2b(digest_size=HASH_HEX_LENGTH // 2)
    digest.update(f"{image.dtype.str}|{image.shape}|".encode())
    digest.update(memoryview(image).cast("B"))
    return digest.hexdigest()
