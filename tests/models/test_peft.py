import copy

import open_clip
import pytest
import torch
from torch import nn

from ulfine.config import StrategyConfig, from_dict
from ulfine.models.encoder import build_image_encoder
from ulfine.models.peft import PEFT, residual_blocks
from ulfine.models.peft.adaptformer import AdaptFormerConfig, lift_bottleneck
from ulfine.models.peft.lora import LoRAConfig
from ulfine.models.peft.vpt import VPTConfig

EXACT_AT_INIT = ["adaptformer", "lora", "bitfit"]


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def test_open_clip_attachment_names_exist(tiny_clip):
    """Fails loudly if open_clip moves the names every PEFT module attaches through."""
    visual = tiny_clip.visual
    assert isinstance(visual, open_clip.transformer.VisionTransformer)
    assert isinstance(visual.transformer.batch_first, bool)
    assert isinstance(visual.conv1, nn.Conv2d)
    for block in residual_blocks(visual):
        assert isinstance(block.attn, nn.MultiheadAttention)
        assert block.attn.in_proj_weight.shape == (3 * 64, 64)
        assert isinstance(block.ln_2, nn.LayerNorm)
        assert isinstance(block.mlp.c_fc, nn.Linear)
        assert isinstance(block.ls_2, nn.Identity)


def test_residual_blocks_names_the_wrong_class():
    with pytest.raises(TypeError, match="Linear has no 'transformer.resblocks'"):
        residual_blocks(nn.Linear(2, 2))


def test_registry_lists_all_modules():
    assert PEFT.names() == ["adaptformer", "bitfit", "lora", "vpt"]


@pytest.mark.parametrize("name", EXACT_AT_INIT)
def test_attached_model_equals_frozen_at_init(name, tiny_clip, images):
    visual = tiny_clip.visual
    with torch.no_grad():
        before = visual(images)
        PEFT.get(name)(visual, _options(name))
        after = visual(images)
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-6)


def _options(name: str, size: int = 4) -> object:
    """Defaults with explicit small sizes (LIFT's rule, size 0, needs the class count)."""
    return AdaptFormerConfig(dim=size) if name == "adaptformer" else LoRAConfig(rank=max(1, size // 2)) \
        if name == "lora" else PEFT.config(name)()


@pytest.mark.parametrize("name", PEFT.names())
def test_one_step_changes_only_the_container(name, tiny_clip, images):
    visual = tiny_clip.visual.train()
    visual.requires_grad_(False)
    container = PEFT.get(name)(visual, _options(name)).requires_grad_(True)
    tuned = {id(p) for p in container.parameters()}
    assert tuned <= {id(p) for p in visual.parameters()}, "the ViT must own every tuned parameter"
    before = {n: p.detach().clone() for n, p in visual.named_parameters()}

    visual(images).square().sum().backward()
    torch.optim.SGD(container.parameters(), lr=0.1).step()

    changed = {n for n, p in visual.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= {n for n, p in visual.named_parameters() if id(p) in tuned}
    assert all(p.grad is not None for p in container.parameters())
    assert all(p.grad is None for p in visual.parameters() if id(p) not in tuned)


def test_adaptformer_needs_identity_layerscale():
    model = open_clip.CLIP(
        embed_dim=32,
        vision_cfg=open_clip.CLIPVisionCfg(layers=1, width=64, head_width=32, patch_size=8, image_size=32,
                                           ls_init_value=0.1),
        text_cfg=open_clip.CLIPTextCfg(context_length=16, vocab_size=100, width=32, heads=2, layers=1),
    )
    with pytest.raises(TypeError, match=r"resblocks\[0\].ls_2 is LayerScale"):
        PEFT.get("adaptformer")(model.visual, AdaptFormerConfig(dim=4))


def test_adaptformer_adds_scaled_adapter_on_the_mlp_input(tiny_clip):
    block = tiny_clip.visual.transformer.resblocks[0]
    ln_2, mlp = block.ln_2, block.mlp
    adapter = PEFT.get("adaptformer")(tiny_clip.visual, AdaptFormerConfig(dim=4, scale=0.5, learnable_scale=False))[0]
    nn.init.normal_(adapter.up.weight)
    x = torch.randn(2, 5, 64)
    expected = mlp(ln_2(x)) + 0.5 * adapter.up(torch.relu(adapter.down(adapter.norm(x))))
    torch.testing.assert_close(block.ls_2(block.mlp(block.ln_2(x))), expected)


def test_adaptformer_scale_is_learned_from_one_and_gets_gradient(tiny_clip, images):
    """LIFT's AdaptFormer: s starts at 1 and trains; step 0 is still the frozen model (up = 0)."""
    visual = tiny_clip.visual
    with torch.no_grad():
        before = visual(images)
    adapters = PEFT.get("adaptformer")(visual, AdaptFormerConfig(dim=2))
    adapter = adapters[0]
    assert isinstance(adapter.scale, nn.Parameter) and adapter.scale.tolist() == [1.0]
    assert adapter.scale in set(adapters.parameters())
    with torch.no_grad():
        torch.testing.assert_close(visual(images), before, rtol=1e-5, atol=1e-6)
    nn.init.normal_(adapter.up.weight)  # as after a first step: the adapter's output is non-zero
    visual(images).square().sum().backward()
    assert adapter.scale.grad is not None and adapter.scale.grad.abs().item() > 0


def test_fixed_scale_is_reachable_by_config(tiny_clip):
    adapter = PEFT.get("adaptformer")(
        tiny_clip.visual, AdaptFormerConfig(dim=64, scale=0.1, learnable_scale=False)
    )[0]
    assert adapter.scale == 0.1 and adapter.down.out_features == 64
    assert all(p is not adapter.scale for p in adapter.parameters())


@pytest.mark.parametrize(("classes", "blocks", "dim"), [(10, 12, 1), (100, 12, 4), (1000, 12, 32), (365, 12, 8),
                                                          (8142, 12, 256), (10, 2, 2)])
def test_lift_bottleneck_rule(classes, blocks, dim):
    # LIFT: 2 ** max(0, int(log2(C / (2L)))): CIFAR-100 -> 4, ImageNet-LT -> 32, Places-LT -> 8
    assert lift_bottleneck(classes, blocks) == dim


def test_encoder_resolves_lift_dims_from_the_class_count(tiny_clip):
    # tiny ViT: 2 blocks, so 40 classes -> 2^floor(log2(10)) = 8 for both AdaptFormer and LoRA
    encoder = build_image_encoder(tiny_clip.visual, from_dict(StrategyConfig, {"name": "lft", "peft": "adaptformer"}), num_classes=40)
    assert {m.down.out_features for m in encoder.modules() if hasattr(m, "down")} == {8}
    with pytest.raises(ValueError, match="strategy.lora.rank = 0"):
        PEFT.get("lora")(tiny_clip.visual, LoRAConfig())


def test_bitfit_tunes_block_biases_only_as_lift(tiny_clip):
    biases = PEFT.get("bitfit")(tiny_clip.visual, PEFT.config("bitfit")())
    tuned = {id(p) for p in biases}
    assert id(tiny_clip.visual.ln_post.bias) not in tuned and id(tiny_clip.visual.ln_pre.bias) not in tuned
    assert id(tiny_clip.visual.transformer.resblocks[0].attn.in_proj_bias) in tuned


def test_lora_a_has_lift_init_bound(tiny_clip):
    update = PEFT.get("lora")(tiny_clip.visual, LoRAConfig(rank=4))[0]
    assert update.scaling == 0.25  # LIFT: 1 / r
    bound = 1 / 4 ** 0.5  # kaiming_uniform(a = sqrt(5)) with LIFT's fan-in r
    assert update.a_q.abs().max().item() <= bound and update.a_q.abs().max().item() > 0.8 * bound


def test_lora_updates_q_and_v_rows_only(tiny_clip):
    attn = tiny_clip.visual.transformer.resblocks[0].attn
    original = attn.in_proj_weight.detach().clone()
    update = PEFT.get("lora")(tiny_clip.visual, LoRAConfig(rank=2, alpha=4.0))[0]
    nn.init.normal_(update.b_q)
    nn.init.normal_(update.b_v)
    delta = (attn.in_proj_weight - original).detach()
    torch.testing.assert_close(delta[:64], 2.0 * update.b_q @ update.a_q)
    assert torch.equal(delta[64:128], torch.zeros(64, 64))
    torch.testing.assert_close(delta[128:], 2.0 * update.b_v @ update.a_v)


def _block_inputs(visual, images):
    seen = []
    hooks = [b.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach())) for b in
             visual.transformer.resblocks]
    visual(images)
    for hook in hooks:
        hook.remove()
    return seen


def test_vpt_gives_every_block_its_own_prompts_after_cls(tiny_clip, images):
    visual = tiny_clip.visual
    plain = _block_inputs(visual, images)[0]  # [B, 1 + 16, 64]
    prompts = PEFT.get("vpt")(visual, VPTConfig(length=3))
    seen = _block_inputs(visual, images)
    for layer, x in enumerate(seen):
        assert x.shape == (3, 1 + 3 + 16, 64)
        assert torch.equal(x[:, 1:4], prompts[layer].prompts.expand(3, -1, -1))
    assert torch.equal(seen[0][:, [0, *range(4, 20)]], plain)
    tokens = []
    hook = visual.transformer.register_forward_hook(lambda m, args, out: tokens.append(out))
    visual(images)
    hook.remove()
    assert tokens[0].shape == (3, 1 + 16, 64), "prompts must be gone before _pool"


def test_vpt_deepcopy_rebinds_hooks_to_the_copy(tiny_clip, images):
    visual = tiny_clip.visual
    PEFT.get("vpt")(visual, VPTConfig(length=2))
    twin = copy.deepcopy(visual)
    with torch.no_grad():
        torch.testing.assert_close(twin(images), visual(images))
        before = visual(images)
        for layer in twin.transformer.vpt:  # not a constant shift: the blocks' LayerNorm would remove it
            layer.prompts.add_(torch.randn_like(layer.prompts))
        assert not torch.allclose(twin(images), before, atol=1e-3)
        assert torch.equal(visual(images), before)


def test_every_module_attaches_to_the_real_miniclip(miniclip_dir):
    counts = {}
    for name in PEFT.names():
        model = open_clip.create_model(f"local-dir:{miniclip_dir}").eval()
        container = PEFT.get(name)(model.visual, _options(name, size=1))
        with torch.no_grad():
            out = model.visual(torch.randn(2, 3, 32, 32))
        assert out.shape == (2, 384) and torch.isfinite(out).all()
        counts[name] = sum(p.numel() for p in container.parameters())
    assert all(count > 0 for count in counts.values())
