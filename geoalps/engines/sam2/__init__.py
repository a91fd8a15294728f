"""The SAM 2 engine (sam2 package, SAM 2 and 2.1, every Hiera size) and what it needs.

- ``engine.py``: ``Sam2Engine``, the adapter behind ``--engine sam2`` (registered on import).
- ``checkpoints.py``: SAM 2.1 releases in the cache, download and verification.
- ``models.py``: ``load_sam2`` (configuration inferred from the checkpoint's tensor shapes); the
  tiny random-weight test models are in tests/sam_models.py.
- ``generators.py``: geoalps's fast generator and sam2's ``SAM2AutomaticMaskGenerator``, both
  returning the sam engine's ``SamMasks`` (the generic steps are the sam engine's modules).

Only ``engine.py`` is imported here and it loads torch and sam2 lazily.
"""
from geoalps.engines.sam2.engine import Sam2Engine

__all__ = ["Sam2Engine"]
