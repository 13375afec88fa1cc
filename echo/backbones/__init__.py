from .shared import BackboneRegistry
from .ncsnpp_deform import NCSNppDeform

__all__ = ["BackboneRegistry", "NCSNppDeform"]
