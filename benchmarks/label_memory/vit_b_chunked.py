"""vit_b (random weights): the CPU encoder with global attention in query chunks against
segment_anything's own encoder, and the fast generator's masks on it against segment_anything's
generator (thresholds 0, so masks survive). Complements bench.py, whose random-weight vit_b runs
at default thresholds keep no mask. Prints one JSON line; about 3 encoder passes of CPU time.
"""
from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from geoalps.engines.sam.generators import FastMaskGenerator, reference_generate  # noqa: E402
from geoalps.engines.sam.models import SAM_CONFIGS, build_sam  # noqa: E402
from geoalps.engines.sam.sdpa_encoder import encoder_forward_chunked  # noqa: E402
from tests.sam_models import sharpen_random_decoder  # noqa: E402

_spec = importlib.util.spec_from_file_location("sam_amg_bench", HERE.parent / "sam_amg" / "bench.py")
sam_amg = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sam_amg)

torch.manual_seed(0)
model = build_sam(SAM_CONFIGS["vit_b"]).eval()
with torch.no_grad():
    sharpen_random_decoder(model)
x = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(1))
with torch.inference_mode():
    t0 = time.perf_counter()
    plain = model.image_encoder(x)
    t1 = time.perf_counter()
    chunked = encoder_forward_chunked(model.image_encoder, x)
    t2 = time.perf_counter()
image, source = sam_amg.aerial_tile()
settings = dict(points_per_side=6, pred_iou_thresh=0.0, stability_score_thresh=0.0)
ref = reference_generate(model, image, **settings)  # segment_anything's encoder and generator
fast = FastMaskGenerator(model, **settings).generate(image)  # chunked encoder on CPU
print(json.dumps({"embedding_max_abs_diff": float((plain - chunked).abs().max()),
                  "embedding_identical": bool(torch.equal(plain, chunked)),
                  "plain_encoder_s": round(t1 - t0, 1), "chunked_encoder_s": round(t2 - t1, 1),
                  "image": source, "settings": settings, **sam_amg.match(ref, fast)}))
