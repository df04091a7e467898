"""SSL methods, one file each, registered in ``METHODS`` by name with their config dataclass.

Every module of this package is imported here, so a new method is one new file.
"""
from ulfine.methods.base import METHODS, MethodContext, PseudoLabels, SSLMethod, StepOutput, build_method
from ulfine.registry import import_submodules

import_submodules(__name__)

__all__ = ["METHODS", "MethodContext", "PseudoLabels", "SSLMethod", "StepOutput", "build_method"]
