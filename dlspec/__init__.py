"""dlspec: a declarative deep-learning model-spec compiler.

    >>> import dlspec
    >>> prog = dlspec.compile_file("specs/resnet18.dls")   # doctest: +SKIP
"""

from .errors import Diagnostic, DlspecError
from .program import compile_file, compile_source

__version__ = "0.1.0"
__all__ = ["Diagnostic", "DlspecError", "compile_file", "compile_source", "__version__"]
