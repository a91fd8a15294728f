"""The two SAM automatic mask generators, one import away, and the record both return.

- ``FastMaskGenerator`` (``fast_generator.py``): geoalps's, segment_anything's masks for much
  less work; the default of ``--sam-generator``;
- ``reference_generate`` (``reference_generator.py``): segment_anything's own
  ``SamAutomaticMaskGenerator``, for ``--sam-generator reference`` and as the tests' yardstick;
- ``SamMasks`` (``sam_masks.py``): one image's masks as box crops with segment_anything's
  per-mask fields; ``SamMasks.to_tile_masks`` gives geoalps's ``TileMasks``.

The steps the fast generator is built from have a module each: ``batch_encoder.py`` (the
image encoder on batches of tiles), ``sdpa_encoder.py`` (its attention through fused kernels
on GPU), ``decoder.py`` (prompts decoded in batches), ``stability_bound.py`` (reject unstable
masks on the low-resolution logits), ``exact_cells.py`` (exact full-resolution masks from the
logits' cells) and ``postprocess.py`` (upsampling, boxes, small-region removal). Importing
this module imports torch and segment_anything.
"""
from geoalps.engines.sam.fast_generator import FastMaskGenerator
from geoalps.engines.sam.reference_generator import reference_generate
from geoalps.engines.sam.sam_masks import SamMasks

__all__ = ["FastMaskGenerator", "SamMasks", "reference_generate"]
