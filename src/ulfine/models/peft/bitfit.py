"""BitFit (Ben Zaken et al., ACL 2022): fine-tune only the bias terms of the image encoder.

Every parameter of the transformer blocks whose name ends in ``bias`` (attention, MLP and
LayerNorm biases) is trainable; as in LIFT (``bias_tuning`` over ``resblocks``), the biases of
``ln_pre`` and ``ln_post`` outside the blocks stay frozen. The ViT is not changed, so step 0
equals the frozen model. The biases stay owned by the ViT; the returned ``nn.ParameterList``
only shares them, which is all a container needs (``parameters()`` yields exactly the tuned
tensors).
"""
from __future__ import annotations

from torch import nn

from ulfine.models.peft.base import PEFT, residual_blocks


@PEFT.register("bitfit")
def attach(visual: nn.Module, cfg: object) -> nn.ParameterList:
    """Returns the biases inside the transformer blocks (LIFT's BitFit); no options (``cfg`` is NoOptions)."""
    biases = [param for name, param in residual_blocks(visual).named_parameters() if name.endswith("bias")]
    if not biases:
        raise TypeError(f"{type(visual).__name__} has no bias parameters for BitFit to tune")
    return nn.ParameterList(biases)
