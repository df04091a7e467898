"""ulfine: foundation-model-assisted long-tailed semi-supervised learning (ULFine and baselines)."""
__version__ = "0.1.0"
