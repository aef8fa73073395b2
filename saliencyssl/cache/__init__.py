"""Exact targets stored under a content hash of the decoded pixels plus the labeller fingerprint.

:class:`TargetCache` is the on-disk store (diskcache; process-safe, atomic, self-checking);
:mod:`saliencyssl.cache.codec` is its compact value format.
"""

from saliencyssl.cache.codec import CorruptTargetError, decode_target, encode_target
from saliencyssl.cache.store import CacheOpenError, CacheStats, TargetCache, VerifyReport

__all__ = ["TargetCache", "CacheStats", "VerifyReport", "encode_target", "decode_target",
           "CorruptTargetError", "CacheOpenError"]
