__version__ = "0.1.0"

# The plugin modules. Each registers its datasets, backbones or methods where it defines them (mlrpl.core.Registry),
# so importing the package makes every one of them available by name.
from . import fashionscenes, garmentnet, clip, baselines, sst_hst, sarb, dsrb, clsl_augment, clsl  # noqa: E402,F401
