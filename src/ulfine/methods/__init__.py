"""SSL methods, one file each, registered in ``METHODS`` by name."""
from ulfine.methods.base import METHODS, MethodContext, PseudoLabels, SSLMethod, StepOutput, build_method

__all__ = ["METHODS", "MethodContext", "PseudoLabels", "SSLMethod", "StepOutput", "build_method"]
