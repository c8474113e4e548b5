"""Identity-consistency metrics: "how consistent is the identity this LoRA / workflow produces?"

A reference set (the person's real photos) and one or more named candidate groups (generated images) are
analyzed with one face backend. :func:`analysis.build_metrics` turns the face analyses into per-image rows and
per-group statistics (bootstrap confidence intervals, significance tests between groups, flexibility and the
overtraining warning); :mod:`copycat` pairs every candidate with its nearest reference and ranks "black hole"
references; :mod:`report` writes the offline HTML dashboard, the CSV and the JSON summary.

Heavy imports (sklearn, scipy, PIL) stay inside functions so importing this package is cheap.
"""

from __future__ import annotations

from .analysis import analyze_items, build_metrics
from .copycat import BANDS, band_of, black_hole_ranking
from .results import AnalyzedImage, GroupStats, ImageRow, MetricsResult

__all__ = [
    "BANDS",
    "AnalyzedImage",
    "GroupStats",
    "ImageRow",
    "MetricsResult",
    "analyze_items",
    "band_of",
    "black_hole_ranking",
    "build_metrics",
]
