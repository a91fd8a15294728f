"""geoalps.train.models: any band count, named sizes, timm weights adapted to N bands, partial loads."""
from __future__ import annotations

import pytest
import timm
import torch
from timm.models._manipulate import adapt_input_conv

from geoalps.errors import ModelError, OptionError
from geoalps.train.models import MODEL_SIZES, build_model, load_weights, make_arch

from train.train_scenes import _train_test_environment  # noqa: F401 - fixtures used by name


@pytest.mark.parametrize("bands", [4, 13])
def test_multispectral_input_gives_logits_at_input_resolution(bands):
    model = build_model(make_arch("tiny", in_chans=bands, num_classes=5))
    assert model.backbone.swin.patch_embed.proj.in_channels == bands
    assert model(torch.randn(2, bands, 64, 64)).shape == (2, 5, 64, 64)


def test_named_sizes_follow_the_swin_paper():
    assert (MODEL_SIZES["swin_t"].embed_dim, MODEL_SIZES["swin_t"].depths) == (96, (2, 2, 6, 2))
    assert (MODEL_SIZES["swin_s"].embed_dim, MODEL_SIZES["swin_s"].depths) == (96, (2, 2, 18, 2))
    assert (MODEL_SIZES["swin_b"].embed_dim, MODEL_SIZES["swin_b"].num_heads) == (128, (4, 8, 16, 32))
    with pytest.raises(OptionError, match="unknown model size"):
        make_arch("swin_xl", 3, 2)
    with pytest.raises(OptionError, match="multiple of 32"):
        make_arch("tiny", 3, 2, tile_size_px=80)


def test_rgb_timm_checkpoint_is_adapted_to_more_bands(tmp_path):
    # A 3-band ImageNet-style Swin checkpoint file, as users download them (window 7, with a head).
    rgb = timm.create_model("swin_tiny_patch4_window7_224", embed_dim=24, depths=(1, 1, 2, 1), num_heads=(1, 2, 3, 6))
    path = tmp_path / "swin_rgb.pth"
    torch.save(rgb.state_dict(), path)
    model = build_model(make_arch("tiny", in_chans=5, num_classes=2), backbone_weights=path)
    first = model.backbone.swin.patch_embed.proj.weight
    assert first.shape[1] == 5
    assert torch.allclose(first, adapt_input_conv(5, rgb.state_dict()["patch_embed.proj.weight"]))
    deep = "layers.2.blocks.1.mlp.fc1.weight"
    assert torch.equal(model.backbone.swin.state_dict()[deep], rgb.state_dict()[deep])


def test_wrong_backbone_weights_are_a_one_line_error(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"something": torch.zeros(3)}, path)
    with pytest.raises(ModelError, match="not Swin weights"):
        build_model(make_arch("tiny", in_chans=4, num_classes=2), backbone_weights=path)


def test_fine_tuning_load_keeps_backbone_and_renews_a_mismatched_classifier():
    torch.manual_seed(0)
    source = build_model(make_arch("tiny", in_chans=4, num_classes=7))
    target = build_model(make_arch("tiny", in_chans=4, num_classes=2))
    missing = load_weights(target, source.state_dict(), keep_classifier=False)
    assert missing == ["classifier.1.bias", "classifier.1.weight"]
    for key, value in source.state_dict().items():
        if not key.startswith("classifier."):
            assert torch.equal(target.state_dict()[key], value), key


def test_load_tolerates_another_tile_size():
    source = build_model(make_arch("tiny", in_chans=4, num_classes=2, tile_size_px=64))
    target = build_model(make_arch("tiny", in_chans=4, num_classes=2, tile_size_px=128))
    assert load_weights(target, source.state_dict()) == []
    assert target(torch.randn(1, 4, 128, 128)).shape == (1, 2, 128, 128)
