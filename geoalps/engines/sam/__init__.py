"""The SAM engine (segment_anything, any ViT size) and what it needs: checkpoints, models, mask generation.

- ``engine.py``: ``SamEngine``, the adapter behind ``--engine sam`` (registered on import).
- ``checkpoints.py``: the one checkpoint resolver (option, environment, cache) and downloads.
- ``models.py``: ``load_sam`` (size inferred from the checkpoint's tensor shapes); the tiny
  random-weight test models are in tests/sam_models.py.
- ``generators.py`` (and the modules it names): geoalps's fast automatic mask generator and
  segment_anything's reference one, with the same output type (``SamMasks``: crops and boxes).

Only ``engine.py`` is imported here and it loads torch lazily: ``--engine classical`` runs and
``geoalps --help`` never import torch.
"""
from geoalps.engines.sam.engine import SamEngine

__all__ = ["SamEngine"]
