"""Evaluation of pretrained backbones (the surrogate's fidelity: :mod:`saliencyssl.surrogate.evaluation`).
Import the module you need:

- :mod:`~saliencyssl.eval.features`: frozen-backbone features, cached per backbone and data set;
- :mod:`~saliencyssl.eval.probe`, :mod:`~saliencyssl.eval.knn`: linear probe and kNN at label
  fractions drawn per seed, class-balanced (:mod:`~saliencyssl.eval.fractions`);
- :mod:`~saliencyssl.eval.clustering`: k-means NMI/ARI and t-SNE pictures;
- :mod:`~saliencyssl.eval.classification`: those protocols on a backbone and two labelled sets;
- :mod:`~saliencyssl.eval.masks`: images paired with masks, a split by content hash, scores and
  image-blind floors for the downstream models :mod:`~saliencyssl.eval.segmentation` (an FPN
  segmenter) and :mod:`~saliencyssl.eval.detection` (Mask R-CNN);
- :mod:`~saliencyssl.eval.results`: results.json/csv/markdown and plots.

The package imports none of them, so ``import saliencyssl.eval.knn`` loads only what kNN needs.
"""
