"""SAM 2 configurations from tensor shapes: the eight releases as sam2's own YAMLs build them, and
tiny random-weight files through the loader users take with sam2.1_hiera_tiny.pt."""
from __future__ import annotations

import pytest
import torch

from geoalps.engines import checkpoint_is_sam2, resolve_engine_name
from geoalps.engines.sam2.models import (OFFICIAL_MODEL_NAMES, SAM2_CONFIGS, build_sam2, infer_sam2_config,
                                         load_sam2, meta_device)
from geoalps.errors import ModelError
from geoalps.options import LabelOptions
from tests.sam_models import build_tiny_sam, build_tiny_sam2, save_sam2_checkpoint, save_sam_checkpoint

YAML = {"hiera_tiny": "t", "hiera_small": "s", "hiera_base_plus": "b+", "hiera_large": "l"}


def _sam2_yaml_model(name: str):
    """The release built as sam2's build_sam2 builds it (hydra YAML + its eval overrides), on meta."""
    from hydra import compose
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    import sam2  # noqa: F401  (registers its config module with hydra)

    version, size = name[len("sam"):].split("_", 1)
    extra = "++model.sam_mask_decoder_extra_args."
    cfg = compose(config_name=f"configs/sam{version}/sam{version}_hiera_{YAML[size]}.yaml",
                  overrides=[f"{extra}dynamic_multimask_via_stability=true",
                             f"{extra}dynamic_multimask_stability_delta=0.05",
                             f"{extra}dynamic_multimask_stability_thresh=0.98"])
    OmegaConf.resolve(cfg)
    with meta_device():
        return instantiate(cfg.model, _recursive_=True)


@pytest.mark.parametrize("name", OFFICIAL_MODEL_NAMES)
def test_every_release_is_built_as_sam2s_yaml_builds_it_and_recognised_from_its_shapes(name):
    ref = _sam2_yaml_model(name)
    with meta_device():
        mine = build_sam2(SAM2_CONFIGS[name])
    shapes = lambda m: {k: tuple(v.shape) for k, v in m.state_dict().items()}  # noqa: E731
    assert shapes(mine) == shapes(ref)
    # what shapes do not show: heads, windows (0 = global attention), flags
    blocks = lambda m: [(b.window_size, b.attn.num_heads, b.dim_out) for b in m.image_encoder.trunk.blocks]  # noqa: E731
    assert blocks(mine) == blocks(ref)
    flags = {k: v for k, v in vars(ref).items() if isinstance(v, (bool, int, float, str)) and not k.startswith("_")}
    assert {k: getattr(mine, k) for k in flags} == flags
    assert mine.sam_mask_decoder.dynamic_multimask_via_stability
    assert infer_sam2_config(ref.state_dict()).short_name == name


def test_tiny_checkpoint_round_trips_through_the_users_loader(tiny_sam2_checkpoint):
    model, name = load_sam2(tiny_sam2_checkpoint, device="cpu")
    assert name.startswith("custom(sam2.1,embed_dim=8")
    fresh = build_tiny_sam2(seed=0).state_dict()
    loaded = model.state_dict()
    assert loaded.keys() == fresh.keys() and all(torch.equal(loaded[k], fresh[k]) for k in fresh)
    assert not any(t.is_meta for t in [*model.parameters(), *model.buffers()])
    rope = model.memory_attention.layers[0].self_attn
    assert rope.freqs_cis.device.type == "cpu" and torch.isfinite(torch.view_as_real(rope.freqs_cis)).all()
    assert torch.load(tiny_sam2_checkpoint, weights_only=True).keys() == {"model"}  # the releases' layout


def test_a_sam2_0_file_is_told_apart_from_2_1(tmp_path):
    path = save_sam2_checkpoint(build_tiny_sam2(seed=1, version="2"), tmp_path / "v2.pt")
    model, name = load_sam2(path, device="cpu")
    assert name.startswith("custom(sam2,") and model.no_obj_embed_spatial is None


def test_wrong_files_and_sizes_are_one_line_model_errors(tiny_sam2_checkpoint, tmp_path):
    with pytest.raises(ModelError, match=r"sam2.1_tiny_random.pt: checkpoint is custom.*not hiera_large"):
        load_sam2(tiny_sam2_checkpoint, model_type="hiera_large", device="cpu")
    with pytest.raises(ModelError, match="not a SAM 2 size"):
        load_sam2(tiny_sam2_checkpoint, model_type="vit_b", device="cpu")

    sam1 = save_sam_checkpoint(build_tiny_sam(seed=0), tmp_path / "sam1.pth")
    with pytest.raises(ModelError, match="sam1.pth: not a SAM 2 checkpoint .*--engine sam"):
        load_sam2(sam1, device="cpu")
    cut = tmp_path / "cut.pt"
    cut.write_bytes(tiny_sam2_checkpoint.read_bytes()[:5000])
    with pytest.raises(ModelError, match="cut.pt: truncated"):
        load_sam2(cut, device="cpu")
    state = torch.load(tiny_sam2_checkpoint, weights_only=True)["model"]
    del state["sam_mask_decoder.iou_token.weight"]
    torch.save({"model": state}, tmp_path / "partial.pt")
    with pytest.raises(ModelError, match="partial.pt: not a SAM 2 state dict"):
        load_sam2(tmp_path / "partial.pt", device="cpu")


def test_auto_engine_follows_the_checkpoint_family(tiny_sam2_checkpoint, tmp_path, monkeypatch):

    sam1 = save_sam_checkpoint(build_tiny_sam(seed=0), tmp_path / "sam1.pth")
    assert checkpoint_is_sam2(str(tiny_sam2_checkpoint)) and not checkpoint_is_sam2(str(sam1))
    monkeypatch.setenv("GEOALPS_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("GEOALPS_SAM_CHECKPOINT", raising=False)
    assert resolve_engine_name(LabelOptions(checkpoint=str(tiny_sam2_checkpoint))) == "sam2"
    assert resolve_engine_name(LabelOptions(checkpoint=str(sam1))) == "sam"
    assert resolve_engine_name(LabelOptions()) == "classical"
    # only a SAM 2.1 release in the cache: auto picks sam2; a SAM one as well: sam stays first
    cached = tmp_path / "cache" / "sam2" / "sam2.1_hiera_small.pt"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(tiny_sam2_checkpoint.read_bytes())
    assert resolve_engine_name(LabelOptions()) == "sam2"
    assert resolve_engine_name(LabelOptions(model_type="hiera_small")) == "sam2"
    assert resolve_engine_name(LabelOptions(model_type="hiera_large")) == "classical"
    (tmp_path / "cache" / "sam").mkdir()
    (tmp_path / "cache" / "sam" / "sam_vit_b_01ec64.pth").write_bytes(sam1.read_bytes())
    assert resolve_engine_name(LabelOptions()) == "sam"
