"""geodml: geo-distributed machine learning.

Train one L2-regularized linear model on data born in several data centers (DCs)
without copying the raw rows to one place: each DC computes sums over its own rows
and only those aggregates cross the wide-area network (Cano et al., 2016).
"""

__version__ = "0.1.0"
