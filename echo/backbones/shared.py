"""The backbone registry shared by all networks."""
from echo.util.registry import Registry

BackboneRegistry = Registry("backbone")
