"""geoalps.engines.sam.models: any SAM size loads through one path; bad files give one-line errors."""
from __future__ import annotations

import pytest
import torch
from segment_anything import sam_model_registry

from geoalps.errors import GeoAlpsError
from geoalps.engines.sam.models import SAM_CONFIGS, infer_sam_config, load_sam
from tests.sam_models import build_tiny_sam, save_sam_checkpoint


def _outputs(model, image, point):
    """Encoder embedding plus the decoder's masks and scores for one point prompt."""
    with torch.inference_mode():
        embedding = model.image_encoder(model.preprocess(image))
        sparse, dense = model.prompt_encoder(points=point, boxes=None, masks=None)
        masks, scores = model.mask_decoder(
            image_embeddings=embedding,
            image_pe=model.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=True,
        )
    return embedding, masks, scores


def test_tiny_round_trip_gives_identical_outputs(tmp_path):
    original = build_tiny_sam(seed=3)
    path = save_sam_checkpoint(original, tmp_path / "tiny.pth")

    loaded, name = load_sam(path, device="cpu")

    assert name == "custom(embed_dim=32,depth=2)"
    assert not loaded.training
    image = torch.rand(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(0)) * 255
    point = (torch.tensor([[[500.0, 300.0]]]), torch.tensor([[1]]))
    for expected, got in zip(_outputs(original, image, point), _outputs(loaded, image, point)):
        assert torch.equal(expected, got)


def test_other_small_shapes_are_inferred(tmp_path):
    overrides = dict(
        encoder_embed_dim=48,
        encoder_depth=3,
        encoder_num_heads=3,
        encoder_global_attn_indexes=(0, 2),
        encoder_window_size=5,
        prompt_embed_dim=32,
        decoder_depth=1,
    )
    model = build_tiny_sam(**overrides)
    path = save_sam_checkpoint(model, tmp_path / "other.pth")

    loaded, name = load_sam(path, device="cpu")

    assert name == "custom(embed_dim=48,depth=3)"
    assert infer_sam_config(loaded.state_dict()) == infer_sam_config(model.state_dict())
    blocks = loaded.image_encoder.blocks
    assert [b.window_size for b in blocks] == [0, 5, 0]
    assert blocks[1].attn.num_heads == 3


def test_explicit_model_type_is_checked_against_the_shapes(tiny_checkpoint):
    with pytest.raises(GeoAlpsError, match=r"sam_tiny.pth: checkpoint is custom.*not vit_b"):
        load_sam(tiny_checkpoint, model_type="vit_b", device="cpu")
    model, _ = load_sam(tiny_checkpoint, model_type="tiny", device="cpu")
    assert model.image_encoder.img_size == 1024


def test_unknown_model_type(tiny_checkpoint):
    with pytest.raises(GeoAlpsError, match="unknown model type 'vit_x'"):
        load_sam(tiny_checkpoint, model_type="vit_x", device="cpu")


def test_vit_b_shaped_checkpoint_is_recognised(tmp_path):
    """segment_anything's own vit_b (random weights, ~10 s to build, 375 MB file)."""
    torch.manual_seed(0)
    path = tmp_path / "sam_vit_b_random.pth"
    torch.save(sam_model_registry["vit_b"]().state_dict(), path)

    model, name = load_sam(path, device="cpu")

    assert name == "vit_b"
    assert infer_sam_config(model.state_dict()) == SAM_CONFIGS["vit_b"]
    assert load_sam(path, model_type="vit_b", device="cpu")[1] == "vit_b"
    with pytest.raises(GeoAlpsError, match="checkpoint is vit_b .*not vit_l"):
        load_sam(path, model_type="vit_l", device="cpu")


def _truncate(path, fraction=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p, "checkpoint file not found"),
        (lambda p: (p.mkdir(), p)[1], "is a folder"),
        (lambda p: (p.write_bytes(b""), p)[1], "empty file"),
        (lambda p: (p.write_text("not weights\n"), p)[1], "not a PyTorch checkpoint"),
        (lambda p: (torch.save({"weight": torch.zeros(2)}, p), p)[1], "not a SAM state dict"),
        (lambda p: (torch.save([torch.zeros(2)], p), p)[1], "not a SAM state dict"),
        (
            lambda p: _truncate(save_sam_checkpoint(build_tiny_sam(), p)),
            "truncated or corrupt checkpoint",
        ),
        (
            lambda p: _truncate(
                (torch.save(build_tiny_sam().state_dict(), p, _use_new_zipfile_serialization=False), p)[1]
            ),
            "truncated",
        ),
    ],
    ids=["missing", "folder", "empty", "text", "other-dict", "list", "truncated", "truncated-legacy"],
)
def test_bad_files_give_one_line_errors(tmp_path, make, message):
    path = make(tmp_path / "bad.pth")
    with pytest.raises(GeoAlpsError) as info:
        load_sam(path, device="cpu")
    text = str(info.value)
    assert text.startswith(f"{path}: ")
    assert message in text
    assert "\n" not in text


def test_state_dict_missing_a_tensor_is_not_sam(tmp_path):
    state = build_tiny_sam().state_dict()
    del state["mask_decoder.iou_token.weight"]
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    with pytest.raises(GeoAlpsError, match="not a SAM state dict"):
        load_sam(path, device="cpu")
