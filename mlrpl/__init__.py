__version__ = "0.1.0"


def load_plugins():
    """Import the plugin modules. Each registers its datasets, backbones, augmentations or methods where it defines them
    (mlrpl.core.Registry); the package's registries call this once, before their names are first read, so a module
    that never asks for a name (the tables, the figures) imports no PyTorch."""
    from . import fashionscenes, garmentnet, clip, baselines, sst_hst, sarb, dsrb, clsl_augment, clsl  # noqa: F401
