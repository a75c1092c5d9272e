"""refractor core: typed models, interfaces, plugin system, crystallography kernel, CLI."""

__version__ = "0.1.0"
