"""Event preprocessing stages: filters, pooling, time binning into SNN input indices."""
