"""Evaluation beyond the paper's metrics: diagnostics of whether the shared subspace is aligned."""
