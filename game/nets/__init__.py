"""Networks: building them, loading weights safely, tapping a layer's features, checkpoints."""
