"""The two SAM 2 automatic mask generators, one import away; both return the sam engine's ``SamMasks``.

- ``Sam2FastMaskGenerator`` (``fast_generator.py``): sam2's masks for less work, the default;
- ``reference_generate`` (``reference_generator.py``): sam2's ``SAM2AutomaticMaskGenerator``.
Importing this module imports torch and sam2.
"""
from geoalps.engines.sam2.fast_generator import Sam2FastMaskGenerator
from geoalps.engines.sam2.reference_generator import reference_generate

__all__ = ["Sam2FastMaskGenerator", "reference_generate"]
