"""What leaves a DC, made harder to turn back into rows: secure aggregation
(:mod:`~geodml.privacy.secure_aggregation`) and differential privacy
(:mod:`~geodml.privacy.dp`)."""
