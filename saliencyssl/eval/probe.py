"""Linear probe: logistic regression on standardised frozen features.

The linear probe asks how *linearly separable* the classes are in the backbone's feature space:
the backbone stays frozen, each feature dimension is standardised (zero mean, unit variance,
statistics from the labelled training subset only) and a multinomial logistic regression
(scikit-learn, L-BFGS, L2 penalty ``C``) is fitted on the labelled subset and scored by top-1
accuracy on the test set. The fit is deterministic, so with a fixed subset it gives one answer.

This is the linear evaluation SimCLR uses for transfer (T. Chen, S. Kornblith, M. Norouzi and
G. Hinton, "A Simple Framework for Contrastive Learning of Visual Representations", ICML 2020,
appendix B: an L2-regularised multinomial logistic regression on frozen features, fitted by
L-BFGS, no augmentation), after Kolesnikov, Zhai and Beyer ("Revisiting Self-Supervised Visual
Representation Learning", CVPR 2019). Departure: ``C`` is fixed rather than chosen on a
validation split per data set, so that every backbone of a comparison is probed alike.
"""

from __future__ import annotations

import warnings

import numpy as np

#: Inverse L2 strength of the probe (scikit-learn's default).
DEFAULT_C = 1.0
#: L-BFGS iteration cap; enough for 512-d CIFAR features to converge in practice.
DEFAULT_MAX_ITER = 1000


def fit_linear_probe(features: np.ndarray, labels: np.ndarray, C: float = DEFAULT_C, max_iter: int = DEFAULT_MAX_ITER):
    """Fit ``StandardScaler`` + ``LogisticRegression`` on labelled features.

    Args:
        features: ``(M, D)`` float features of the labelled subset.
        labels: ``(M,)`` integer labels ``>= 0``; at least two distinct classes.
        C: inverse regularisation strength.
        max_iter: L-BFGS iteration cap (a convergence warning is silenced, the result kept).

    Returns:
        A fitted scikit-learn ``Pipeline`` with ``predict``.

    Raises:
        ValueError: fewer than two classes among ``labels``.
    """
    from sklearn.exceptions import ConvergenceWarning
    from threadpoolctl import threadpool_limits
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    features = np.asarray(features, np.float64)
    labels = np.asarray(labels)
    if len(np.unique(labels)) < 2:
        raise ValueError(f"the linear probe needs labelled images of at least two classes, got classes "
                         f"{sorted(set(labels.tolist()))}")
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=float(C), max_iter=int(max_iter)))
    # One BLAS thread: the matrices are small, and a multi-threaded OpenBLAS on a busy machine can
    # spend 30x longer spinning than computing.
    with warnings.catch_warnings(), threadpool_limits(limits=1, user_api="blas"):
        warnings.simplefilter("ignore", ConvergenceWarning)
        probe.fit(features, labels)
    return probe


def linear_probe_accuracy(train_features: np.ndarray, train_labels: np.ndarray, test_features: np.ndarray,
                          test_labels: np.ndarray, C: float = DEFAULT_C, max_iter: int = DEFAULT_MAX_ITER) -> float:
    """Top-1 test accuracy (in [0, 1]) of a linear probe fitted on the training features.

    Args:
        train_features: ``(M, D)`` features of the labelled subset; ``train_labels``: ``(M,)``.
        test_features: ``(T, D)``; ``test_labels``: ``(T,)``, same label numbering as training.
    """
    from threadpoolctl import threadpool_limits

    probe = fit_linear_probe(train_features, train_labels, C=C, max_iter=max_iter)
    with threadpool_limits(limits=1, user_api="blas"):
        predictions = probe.predict(np.asarray(test_features, np.float64))
    return float(np.mean(predictions == np.asarray(test_labels)))


__all__ = ["DEFAULT_C", "DEFAULT_MAX_ITER", "fit_linear_probe", "linear_probe_accuracy"]
