"""Evaluation: fidelity of surrogate targets, and the quality of pretrained backbones downstream.

- :mod:`~saliencyssl.eval.fidelity`: surrogate vs exact targets (mask IoU/F, saliency MAE,
  boundary F, presence accuracy), beside the predict-nothing baseline;
- :mod:`~saliencyssl.eval.features`: frozen-backbone features, cached per backbone and data set;
- :mod:`~saliencyssl.eval.probe`, :mod:`~saliencyssl.eval.knn`: linear probe and kNN at label
  fractions drawn per seed, class-balanced (:mod:`~saliencyssl.eval.fractions`);
- :mod:`~saliencyssl.eval.clustering`: k-means NMI/ARI and t-SNE pictures;
- :mod:`~saliencyssl.eval.segmentation`: an FPN segmenter on the pretrained encoder;
- :mod:`~saliencyssl.eval.report`: results.json/csv/markdown and plots.
"""

from saliencyssl.eval import report, segmentation
from saliencyssl.eval.clustering import ClusterResult, kmeans_clusters, tsne_map
from saliencyssl.eval.features import (BackboneInfo, CachedFeatures, FeatureCache, dataset_features, extract_features,
                                       load_frozen_backbone, open_backbone, random_backbone)
from saliencyssl.eval.fidelity import (FidelityResult, boundary_scores, evaluate_surrogate, fidelity_grid,
                                       fidelity_report, mask_scores, per_image_scores)
from saliencyssl.eval.fractions import DEFAULT_FRACTIONS, FractionScore, balanced_subset, parse_fractions, sweep
from saliencyssl.eval.knn import knn_accuracy, knn_predictions
from saliencyssl.eval.probe import fit_linear_probe, linear_probe_accuracy

__all__ = ["DEFAULT_FRACTIONS", "FractionScore", "balanced_subset", "parse_fractions", "sweep", "BackboneInfo",
           "CachedFeatures", "FeatureCache", "dataset_features", "extract_features", "load_frozen_backbone",
           "open_backbone", "random_backbone", "fit_linear_probe", "linear_probe_accuracy", "knn_accuracy",
           "knn_predictions", "fidelity_report", "evaluate_surrogate", "per_image_scores", "mask_scores", "boundary_scores",
           "fidelity_grid", "FidelityResult", "ClusterResult", "kmeans_clusters", "tsne_map", "report", "segmentation"]
