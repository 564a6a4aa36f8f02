"""dlspec: a declarative deep-learning model-spec compiler.

    >>> import dlspec
    >>> model = dlspec.load("specs/digits_cnn.dls").build("torch")   # doctest: +SKIP
"""

from .api import Spec, load
from .errors import Diagnostic, DlspecError
from .program import compile_file, compile_source
from .version import __version__

__all__ = ["Diagnostic", "DlspecError", "Spec", "compile_file", "compile_source", "load", "__version__"]
