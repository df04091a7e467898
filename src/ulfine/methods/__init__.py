"""SSL methods, one file each, registered in ``METHODS`` by name."""
from ulfine.methods.base import METHODS, MethodContext, PseudoLabels, SSLMethod, StepOutput, build_method
from ulfine.methods import acr, fixmatch, logit_adjust, supervised  # noqa: F401  (register them)
from ulfine.methods import ulfine  # noqa: F401  (registers 'ulfine')

__all__ = ["METHODS", "MethodContext", "PseudoLabels", "SSLMethod", "StepOutput", "build_method"]
