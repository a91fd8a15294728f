"""SAM side of geoalps: load checkpoints of any size, generate automatic masks, fetch weights.

- ``geoalps.sam.models``: ``load_sam`` (size inferred from the checkpoint's tensor shapes),
  ``resolve_device``, tiny random-weight models for tests.
- ``geoalps.sam.amg``: ``FastMaskGenerator`` (geoalps's cheap automatic mask generation) and
  ``reference_generate`` (segment_anything's generator, same output type).
- ``geoalps.sam.download``: official checkpoints into a cache folder, ``find_cached_checkpoint``.

Submodules import torch; import them, not this package, when torch may be missing.
"""
