"""The example's component folder: each subfolder holds a ``defs.yaml``."""
