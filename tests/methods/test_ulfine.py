import math

import pytest
import torch
import torch.nn.functional as F

from pathlib import Path

from ulfine.config import ConfigError, MethodConfig, load_config, to_dict
from ulfine.methods import METHODS, MethodContext, build_method
from ulfine.methods.losses import cross_entropy
from ulfine.methods.ulfine import (
    SPEC_LITERAL, ULFine, ULFineConfig, ema_class_means, orthogonality_loss, paf_alpha, paf_update,
)

REPO = Path(__file__).resolve().parents[2]
# every revised-spec option at its non-literal value: the ablation switches must still remove
# only what they name under whichever of these become the defaults
REVISED = dict(lp_head="cosine", text_loss="la", train_text_prototypes=False, paf_mode="centred",
               paf_alpha="uniform", fusion_scale=0.5, lp_loss="ce_fuse_prior")


def make(
    protos: torch.Tensor,
    counts: list[int] | None = None,
    threshold: float = 0.95,
    la_tau: float = 1.0,
    **ulfine_options,
) -> ULFine:
    num_classes = len(protos)
    # the spec's first reading unless a test says otherwise: the hand-made tensors below are
    # worked out for it (the defaults, chosen on validation data, are tested by name)
    options = ULFineConfig(**{**SPEC_LITERAL, **ulfine_options})
    cfg = MethodConfig(name="ulfine", threshold=threshold, la_tau=la_tau, options=options)
    counts = torch.tensor(counts if counts is not None else [1] * num_classes)
    return build_method(cfg, MethodContext(num_classes=num_classes, text_prototypes=protos, labeled_counts=counts))


def random_batch(num_classes: int = 5, dim: int = 16, batch: int = 12) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    z = [F.normalize(torch.randn(batch, dim, generator=g), dim=-1) for _ in range(3)]
    targets = torch.randint(0, num_classes, (batch,), generator=g)
    return z[0], targets, z[1], z[2]


def test_registered_and_built_by_name() -> None:
    assert "ulfine" in METHODS
    assert isinstance(make(torch.eye(3)), ULFine)


def test_paf_alpha_and_update_by_hand() -> None:
    # P_u = (0.75, 0.25), mu = 0.5 -> alpha = (0.5, 0.5 * 0.25 / 0.75) = (1/2, 1/6)
    method = make(torch.eye(2), mu=0.5)
    method.prior_unlabeled.dist.copy_(torch.tensor([0.75, 0.25]))
    method.proto_visual.copy_(torch.tensor([[0.0, 1.0], [1.0, 0.0]]))
    method.after_optimizer_step()
    assert torch.allclose(method.alpha, torch.tensor([0.5, 1 / 6]))
    # c_1: normalize(0.5 e1 + 0.5 e2) = (1, 1)/sqrt 2;  c_2: normalize(5/6 e2 + 1/6 e1) = (1, 5)/sqrt 26
    expected = torch.tensor([[1.0, 1.0], [1.0, 5.0]]) / torch.tensor([[math.sqrt(2)], [math.sqrt(26)]])
    assert torch.allclose(method.proto_text.detach(), expected, atol=1e-6)


def test_paf_normalises_the_text_prototype_before_mixing() -> None:
    # a gradient step may leave |c^t| = 3; only its direction is mixed with c^v
    proto = paf_update(torch.tensor([[3.0, 0.0]]), torch.tensor([[0.0, 1.0]]), paf_alpha(torch.tensor([1.0]), 0.5))
    assert torch.allclose(proto, torch.tensor([[1.0, 1.0]]) / math.sqrt(2))


def test_visual_prototype_ema_with_absent_and_repeated_classes() -> None:
    proto_visual = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    z = torch.tensor([[0.0, 1.0], [0.0, 2.0], [4.0, 0.0], [0.0, 3.0]])
    targets = torch.tensor([0, 0, 2, 0])  # class 0 three times, class 1 absent
    out = ema_class_means(proto_visual, z, targets, momentum=0.9)
    # class 0: 0.9 (1, 0) + 0.1 mean{(0,1),(0,2),(0,3)} = (0.9, 0.2); class 2: 0.1 (4, 0)
    expected = torch.tensor([[0.9, 0.2], [0.0, 1.0], [0.4, 0.0]])
    assert torch.allclose(out, expected)


def test_step_updates_visual_prototypes_only_for_present_classes() -> None:
    method = make(torch.eye(3), proto_momentum=0.5)
    z = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    method.step(z, torch.tensor([0, 0]), z, z)
    assert torch.equal(method.proto_visual, torch.eye(3)), "state moves once per optimiser step"
    method.after_optimizer_step()
    expected = torch.tensor([[0.5, 0.25, 0.25], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    assert torch.allclose(method.proto_visual, expected)


def test_orthogonality_loss_value_and_analytic_gradient() -> None:
    theta = math.pi / 3
    protos = torch.tensor([[1.0, 0.0], [math.cos(theta), math.sin(theta)]], requires_grad=True)
    loss = orthogonality_loss(protos)
    loss.backward()
    # L = mean over the 2 ordered pairs of cos^2 = cos^2(theta); dL/dc_j projected off c_j
    assert loss.item() == pytest.approx(math.cos(theta) ** 2)
    c, s = math.cos(theta), math.sin(theta)
    expected = torch.tensor([[0.0, 2 * c * s], [2 * c * s * s, -2 * c * c * s]])
    assert torch.allclose(protos.grad, expected, atol=1e-6)


def test_orthogonality_loss_is_zero_for_orthonormal_prototypes() -> None:
    protos = (2 * torch.eye(3)).requires_grad_()
    loss = orthogonality_loss(protos)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.count_nonzero(protos.grad) == 0


def three_class_method(**options) -> ULFine:
    """s_t = z (identity prototypes, scale 1); s_l = (0, z_1, z_3) through a hand-set W."""
    method = make(torch.eye(3), threshold=0.5, text_scale=1.0, **options)
    with torch.no_grad():
        method.lp_head.weight.copy_(torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]))
    return method


@pytest.mark.parametrize("fusion, label", [("dual", 2), ("text", 0), ("lp", 1)])
def test_pseudo_labels_come_from_the_fused_logits(fusion: str, label: int) -> None:
    # s_t = (2, 0, 1.5) says class 0, s_l = (0, 2, 1.5) says class 1, s = (2, 2, 3) says class 2
    method = three_class_method(fusion=fusion)
    z = torch.tensor([[2.0, 0.0, 1.5]])
    out = method.step(z, torch.tensor([0]), z, z)
    assert out.pseudo.labels.tolist() == [label]
    logits = {"dual": [2.0, 2.0, 3.0], "text": [2.0, 0.0, 1.5], "lp": [0.0, 2.0, 1.5]}[fusion]
    assert torch.allclose(out.pseudo.probs, torch.softmax(torch.tensor([logits]), dim=-1))


def test_fusion_weight_scales_the_text_logits() -> None:
    method = three_class_method(fuse_text_weight=0.5)
    z = torch.tensor([[2.0, 0.0, 1.5]])
    assert torch.allclose(method(z), torch.tensor([[1.0, 2.0, 2.25]]))


@pytest.mark.parametrize("options", [{}, REVISED], ids=["literal", "revised"])
@pytest.mark.parametrize("fusion, head, unused", [("text", "text", "lp"), ("lp", "lp", "text")])
def test_single_head_fusion_predicts_and_trains_that_head_alone(
    fusion: str, head: str, unused: str, options: dict
) -> None:
    method = make(torch.randn(5, 16), threshold=1e-6, fusion=fusion, orth=False, **options)
    z_labeled, targets, z_weak, z_strong = random_batch()
    # the prediction is that head's logits, up to a per-class constant (lp_loss=ce_fuse_prior's prior)
    offset = method(z_weak) - method.head_logits(z_weak)[head]
    assert torch.allclose(offset, offset[:1].expand_as(offset), atol=1e-5)
    out = method.step(z_labeled, targets, z_weak, z_strong)
    assert set(out.losses) == {f"sup_{head}", f"unsup_{head}"}
    total = sum(out.losses.values())
    if total.requires_grad:  # text-only with a frozen C_t: only an encoder (none here) would train
        total.backward()
    unused_param = {"text": method.proto_text, "lp": method.lp_head.weight}[unused]
    assert unused_param.grad is None


@pytest.mark.parametrize("options", [{}, REVISED], ids=["literal", "revised"])
def test_paf_off_leaves_prototypes_unchanged(options: dict) -> None:
    method = make(torch.randn(4, 8), paf=False, mu=1.0, **options)
    before = method.proto_text.detach().clone()
    method.prior_unlabeled.dist.copy_(torch.tensor([0.7, 0.1, 0.1, 0.1]))
    method.proto_visual.copy_(torch.randn(4, 8))
    method.after_optimizer_step()
    assert torch.equal(method.proto_text.detach(), before)
    assert torch.count_nonzero(method.alpha) == 0


@pytest.mark.parametrize("orth", [True, False])
def test_orth_switch_removes_the_loss_and_its_gradient(orth: bool) -> None:
    # fusion=lp: no text loss, so C_t's only gradient is the one of lambda_o * L_orth
    method = make(torch.randn(5, 16), fusion="lp", orth=orth, lambda_orth=2.0)
    out = method.step(*random_batch())
    sum(out.losses.values()).backward()
    assert ("orth" in out.losses) == orth
    if orth:
        protos = method.proto_text.detach().clone().requires_grad_()
        (2.0 * orthogonality_loss(protos)).backward()
        assert torch.allclose(method.proto_text.grad, protos.grad)
    else:
        assert method.proto_text.grad is None


def test_frozen_text_prototypes_get_no_gradient_but_paf_moves_them() -> None:
    method = make(torch.randn(5, 16), train_text_prototypes=False, mu=0.5)
    out = method.step(*random_batch())
    sum(out.losses.values()).backward()
    assert not method.proto_text.requires_grad and method.proto_text.grad is None
    before = method.proto_text.detach().clone()
    method.after_optimizer_step()
    assert not torch.allclose(method.proto_text, before)


def test_lp_head_initialisation() -> None:
    protos = torch.randn(5, 16)
    text_init = make(protos)
    assert torch.allclose(text_init.lp_head.weight, F.normalize(protos, dim=-1))
    assert torch.count_nonzero(text_init.lp_head.bias) == 0
    zeros_init = make(protos, lp_init="zeros")
    z = random_batch()[0]
    assert torch.allclose(zeros_init(z), zeros_init.text_logits(z))  # s_l = 0 at step 0


def test_logit_adjusted_lp_loss_uses_the_labeled_prior() -> None:
    method = three_class_method(fusion="lp")
    method.log_prior_labeled.copy_(torch.log(torch.tensor([0.5, 0.3, 0.2])))
    z, targets = torch.tensor([[2.0, 0.0, 1.5]]), torch.tensor([2])
    out = method.step(z, targets, z, z)
    adjusted = torch.tensor([[0.0, 2.0, 1.5]]) + method.log_prior_labeled
    assert out.losses["sup_lp"].item() == pytest.approx(cross_entropy(adjusted, targets).item())


@pytest.mark.parametrize("text_loss, adjusted", [("ce", False), ("la", True)])
def test_text_loss_option_adjusts_the_text_head_only_when_asked(text_loss: str, adjusted: bool) -> None:
    method = three_class_method(fusion="text", text_loss=text_loss)
    method.log_prior_labeled.copy_(torch.log(torch.tensor([0.5, 0.3, 0.2])))
    z, targets = torch.tensor([[2.0, 0.0, 1.5]]), torch.tensor([2])
    out = method.step(z, targets, z, z)
    s_t = method.text_logits(z).detach()
    expected = s_t + method.log_prior_labeled if adjusted else s_t
    assert out.losses["sup_text"].item() == pytest.approx(cross_entropy(expected, targets).item())


def test_ce_fuse_prior_trains_plain_ce_and_fuses_the_estimated_prior() -> None:
    # labeled prior (0.75, 0.25); one labeled image of each class; weak view: fused logits
    # 2 z - 2 log(0.75, 0.25) = (0.58, 22.8) and (1.58, 2.77): two pseudo-labels of class 1, only
    # the first confident -> batch frequencies (1, 2) / 3
    method = make(torch.eye(2), counts=[3, 1], threshold=0.9, text_scale=1.0, la_tau=2.0,
                  lp_loss="ce_fuse_prior", pu_momentum=0.5)
    z_labeled, targets = torch.eye(2), torch.tensor([0, 1])
    z_weak = torch.tensor([[0.0, 10.0], [0.5, 0.0]])
    out = method.step(z_labeled, targets, z_weak, z_weak)
    method.after_optimizer_step()
    assert out.pseudo.labels.tolist() == [1, 1] and out.pseudo.mask.tolist() == [1.0, 0.0]
    assert out.losses["sup_lp"].item() == pytest.approx(cross_entropy(z_labeled, targets).item())
    pi_hat = 0.5 * torch.tensor([0.75, 0.25]) + 0.5 * torch.tensor([1 / 3, 2 / 3])
    assert torch.allclose(method.prior_seen.value, pi_hat)
    p_u = 0.5 * torch.tensor([0.5, 0.5]) + 0.5 * out.pseudo.probs.mean(0)
    assert torch.allclose(method.prior_unlabeled.value, p_u)
    z = torch.tensor([[0.3, -0.2]])
    expected = method.text_logits(z) + method.lp_logits(z) - 2.0 * torch.log(pi_hat)
    assert torch.allclose(method(z), expected, atol=1e-5)


def test_smoke_step_gives_finite_losses_and_gradients() -> None:
    method = make(torch.randn(5, 16), counts=[50, 20, 10, 5, 2], threshold=1e-6)
    out = method.step(*random_batch())
    assert set(out.losses) == {"sup_lp", "sup_text", "unsup_lp", "unsup_text", "orth"}
    assert all(torch.isfinite(loss) for loss in out.losses.values())
    sum(out.losses.values()).backward()
    for grad in (method.proto_text.grad, method.lp_head.weight.grad):
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    method.after_optimizer_step()
    diagnostics = method.diagnostics()
    assert diagnostics["alpha"].shape == diagnostics["proto_drift_cos"].shape == (5,)


def test_state_dict_round_trip_restores_prototypes_and_priors() -> None:
    protos = torch.randn(5, 16)
    trained = make(protos, mu=0.5, threshold=1e-6)
    for _ in range(3):
        trained.step(*random_batch())
        trained.after_optimizer_step()
    resumed = make(protos)
    resumed.load_state_dict(trained.state_dict())
    for name in ("proto_text", "proto_visual", "alpha", "prior_unlabeled.dist", "prior_seen.dist"):
        assert torch.equal(resumed.state_dict()[name], trained.state_dict()[name]), name
    assert not torch.equal(resumed.proto_text, resumed.proto_text_init)
    z = random_batch()[0]
    assert torch.equal(resumed(z), trained(z))


def test_wrong_prototype_shape_names_the_problem() -> None:
    cfg = MethodConfig(name="ulfine")
    ctx = MethodContext(num_classes=3, text_prototypes=torch.randn(4, 8), labeled_counts=torch.ones(3))
    with pytest.raises(ValueError, match="text_prototypes"):
        build_method(cfg, ctx)


# -- revised spec (issue 13): cosine LP head, centred PAF, fusion scale, spec-literal overrides --

def test_cosine_lp_head_is_scaled_cosine_initialised_from_the_text_prototypes() -> None:
    protos = torch.randn(5, 16)
    method = make(protos, lp_head="cosine", lp_scale=10.0)
    assert torch.allclose(F.normalize(method.lp_head.weight, dim=-1), F.normalize(protos, dim=-1))
    z = random_batch()[0]
    assert torch.allclose(method.lp_logits(z), 10.0 * z @ F.normalize(protos, dim=-1).T, atol=1e-5)
    with torch.no_grad():  # a head class's weight norm growing (as under LA) changes nothing
        method.lp_head.weight[0] *= 2.7
    assert torch.allclose(method.lp_logits(z), 10.0 * z @ F.normalize(protos, dim=-1).T, atol=1e-5)


@pytest.mark.parametrize("lp_head, passes", [("linear", False), ("cosine", True)])
def test_only_the_cosine_lp_head_can_pass_the_threshold_on_its_own(lp_head: str, passes: bool) -> None:
    # z = c_0^t exactly: linear s_l = (1, 0, 0), softmax max 0.58; cosine 25 * (1, 0, 0), max ~1
    method = make(torch.eye(3), lp_head=lp_head, fusion="lp")
    out = method.step(torch.eye(3), torch.arange(3), torch.eye(3)[:1], torch.eye(3)[:1])
    assert out.pseudo.labels.tolist() == [0]
    assert out.pseudo.mask.tolist() == [1.0 if passes else 0.0]


def test_cosine_lp_head_cannot_start_from_zeros() -> None:
    with pytest.raises(ConfigError, match="lp_init=zeros"):
        make(torch.eye(3), lp_head="cosine", lp_init="zeros")


def test_lp_scale_and_fusion_scale_must_be_positive() -> None:
    for key in ("lp_scale", "fusion_scale"):
        with pytest.raises(ConfigError, match=f"method.ulfine.{key}"):
            load_config(None, ["method.name=ulfine", f"method.ulfine.{key}=0"])


def modality_gap() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """3 classes in R^5: text prototypes in a cone around e_3, images (and their class means,
    the visual prototypes) in a cone around e_4, as CLIP's two modalities sit.
    Returns (C_t, C_v, images [3, 5], one per class)."""
    eye = torch.eye(5)
    text = F.normalize(eye[3] + 0.3 * eye[:3], dim=-1)
    images = F.normalize(eye[4] + 0.5 * eye[:3], dim=-1)
    return text, images.clone(), images


@pytest.mark.parametrize("mode, moves_all_images", [("literal", True), ("centred", False)])
def test_paf_modality_gap_literal_update_is_a_class_wide_bonus(mode: str, moves_all_images: bool) -> None:
    # fit only class 0 (alpha = (0.5, 0, 0)); score every image against the new prototypes
    text, visual, images = modality_gap()
    assert (images @ text.T).argmax(-1).tolist() == [0, 1, 2]  # zero-shot is right
    fitted = paf_update(text, visual, torch.tensor([0.5, 0.0, 0.0]), mode)
    before, after = images @ text.T, images @ fitted.T
    assert after[0, 0] > before[0, 0]  # class 0's own image scores higher either way
    others = after[1:, 0] > before[1:, 0] + 1e-6
    assert others.all() if moves_all_images else not others.any()
    predictions = after.argmax(-1).tolist()
    assert predictions == ([0, 0, 0] if moves_all_images else [0, 1, 2])


def test_centred_paf_by_hand() -> None:
    # C_t = (e_1, e_2), C_v = (e_1 + e_3, e_2 + e_3): mu_t = (1/2, 1/2, 0), mu_v = (1/2, 1/2, 1),
    # offsets c^t - mu_t = c^v - mu_v = +-(1/2, -1/2, 0): the update leaves C_t where it is
    text, visual = torch.eye(3)[:2], torch.eye(3)[:2] + torch.eye(3)[2]
    alpha = torch.tensor([0.5, 0.25])
    assert torch.allclose(paf_update(text, visual, alpha, "centred"), text)
    literal = paf_update(text, visual, alpha, "literal")
    # the literal one tilts both toward e_3: (1, 0, 1/2) / sqrt(5/4), (0, 1, 1/4) / sqrt(17/16)
    assert torch.allclose(literal[:, 2], torch.tensor([0.5 / math.sqrt(1.25), 0.25 / math.sqrt(17 / 16)]))
    # without a gap (both centred at 0) the two updates agree
    text, visual = torch.tensor([[1.0, 0.0], [-1.0, 0.0]]), torch.tensor([[0.0, 1.0], [0.0, -1.0]])
    assert torch.allclose(paf_update(text, visual, alpha, "centred"), paf_update(text, visual, alpha))


@pytest.mark.parametrize("mode", ["literal", "centred"])
def test_method_applies_the_configured_paf_mode(mode: str) -> None:
    text, visual, _ = modality_gap()
    method = make(text, mu=0.5, paf_mode=mode)
    method.proto_visual.copy_(visual)
    method.after_optimizer_step()
    expected = paf_update(text, visual, torch.full((3,), 0.5), mode)
    assert torch.allclose(method.proto_text.detach(), expected, atol=1e-6)


def test_uniform_paf_alpha_is_the_same_for_every_class() -> None:
    method = make(torch.eye(3), mu=0.2, paf_alpha="uniform")
    method.prior_unlabeled.dist.copy_(torch.tensor([0.8, 0.15, 0.05]))
    method.after_optimizer_step()
    assert torch.allclose(method.alpha, torch.full((3,), 0.2))
    assert torch.allclose(paf_alpha(torch.tensor([0.8, 0.2]), 0.1), torch.tensor([0.1, 0.025]))


def test_fusion_scale_averages_the_two_heads() -> None:
    # s_t = (2, 0, 1.5), s_l = (0, 2, 1.5): mean = (1, 1, 1.5)
    z = torch.tensor([[2.0, 0.0, 1.5]])
    assert torch.allclose(three_class_method(fusion_scale=0.5)(z), torch.tensor([[1.0, 1.0, 1.5]]))
    # with w = 0.5 too: 0.5 * (0.5 s_t + s_l)
    both = three_class_method(fusion_scale=0.5, fuse_text_weight=0.5)(z)
    assert torch.allclose(both, torch.tensor([[0.5, 1.0, 1.125]]))


@pytest.mark.parametrize("fusion", ["text", "lp"])
def test_fusion_scale_leaves_a_single_head_as_it_is(fusion: str) -> None:
    z = torch.tensor([[2.0, 0.0, 1.5]])
    method = three_class_method(fusion=fusion, fusion_scale=0.5)
    assert torch.allclose(method(z), method.head_logits(z)[fusion])


def test_fused_prior_correction_is_scaled_with_the_lp_logits() -> None:
    method = make(torch.eye(2), counts=[3, 1], text_scale=1.0, la_tau=2.0, lp_loss="ce_fuse_prior",
                  fusion_scale=0.5)
    z = torch.tensor([[0.3, -0.2]])
    expected = 0.5 * (method.text_logits(z) + method.lp_logits(z) - 2.0 * torch.log(torch.tensor([0.75, 0.25])))
    assert torch.allclose(method(z), expected, atol=1e-5)


def test_spec_literal_config_file_holds_the_spec_literal_overrides() -> None:
    cfg = load_config(REPO / "configs" / "offline" / "ulfine_spec_literal.yaml")
    assert cfg.method.name == "ulfine"
    options = to_dict(cfg.method.options)
    assert {key: options[key] for key in SPEC_LITERAL} == SPEC_LITERAL
    assert set(SPEC_LITERAL) <= set(to_dict(ULFineConfig()))
