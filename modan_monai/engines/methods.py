"""Checks that a pretraining bundle's method, network, loss and target agree, naming the config ids that do not.

A method override file (``configs/simclr.json``...) switches several ids at once; combining it with a
contradicting id on the command line (the supervised cross-entropy without labels, MulSupCon without labels
under a method name that is not SimCLR, MLVICX's loss on a network without multi-level outputs) would otherwise
train something else than the user asked for, or fail deep inside the first iteration.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from monai.losses import ContrastiveLoss
from torch import nn

from modan_monai.losses import AdamV2Loss, MLVICXLoss, MulSupConLoss, VICRegLoss
from modan_monai.networks import AdamV2Model, ClassificationModel, ContrastiveModel, MLVICXModel

__all__ = ["LABEL_FREE_LOSSES", "LOSS_NETWORKS", "check_method_config", "loss_terms_output"]

#: losses that train without a target (``target_key: null``); MulSupCon then is SimCLR's NT-Xent
LABEL_FREE_LOSSES: tuple[type, ...] = (MulSupConLoss, MLVICXLoss, VICRegLoss, ContrastiveLoss, AdamV2Loss)
#: loss type -> the network types whose output it takes (losses not listed are not checked)
LOSS_NETWORKS: dict[type, tuple[type, ...]] = {
    MulSupConLoss: (ContrastiveModel,),
    MLVICXLoss: (MLVICXModel,),
    AdamV2Loss: (AdamV2Model,),
    nn.CrossEntropyLoss: (ClassificationModel,),
}
_SIMCLR = "simclr"


def check_method_config(
    method: str,
    network: nn.Module,
    loss: Callable[..., Any],
    target_key: str | None,
    label_transform: Any = None,
) -> None:
    """Raise a ``ValueError`` naming the bundle ids when ``method``, ``network_def``, ``loss`` and ``target_key`` clash.

    Args:
        method: the bundle's ``method`` id (``"modan_mulsupcon"``, ``"simclr"``, ``"supervised"``, ``"mlvicx"``...).
        network: the instantiated ``network_def``.
        loss: the instantiated ``loss``.
        target_key: the ``target_key`` id (batch key handed to the loss), or ``None`` for label-free methods.
        label_transform: the instantiated ``label_transform`` (it must write ``target_key`` when that is set).

    Raises:
        ValueError: naming the ids at fault and what to change.
    """
    loss_name, net_name = type(loss).__name__, type(network).__name__
    if target_key is None and not isinstance(loss, LABEL_FREE_LOSSES):
        raise ValueError(
            f"config: loss ({loss_name}) needs a target, but target_key is null (method {method!r}); set "
            "target_key (the supervised override uses 'class') or choose a label-free loss."
        )
    if target_key is not None:
        written = getattr(label_transform, "label_key", None)
        if written != target_key:
            raise ValueError(
                f"config: target_key is {target_key!r} but label_transform ({type(label_transform).__name__}) "
                f"writes {written!r}; the loss would get no target. Set label_transform#label_key to "
                f"{target_key!r} or target_key to {written!r}."
            )
    if isinstance(loss, MulSupConLoss):
        if target_key is None and method != _SIMCLR:
            raise ValueError(
                f"config: method {method!r} with target_key null trains MulSupConLoss without labels, which is "
                "SimCLR; give target_key 'label' (ModAn-MulSupCon) or use configs/simclr.json (method 'simclr')."
            )
        if target_key is not None and method == _SIMCLR:
            raise ValueError(
                f"config: method 'simclr' is label-free but target_key is {target_key!r}; drop the target_key "
                "override or choose another method name."
            )
    for loss_type, networks in LOSS_NETWORKS.items():
        if isinstance(loss, loss_type) and not isinstance(network, networks):
            wanted = " or ".join(t.__name__ for t in networks)
            raise ValueError(
                f"config: loss ({loss_name}) takes the output of {wanted}, but network_def is {net_name} "
                f"(method {method!r}); use the method's override file for both ids."
            )
    if isinstance(loss, AdamV2Loss) and isinstance(network, AdamV2Model):
        _check_adamv2_phase(method, network, loss)


def _check_adamv2_phase(method: str, network: AdamV2Model, loss: AdamV2Loss) -> None:
    """The joint phase (parts given) trains all three terms without same-index skipping; the DINO phase only L_loc."""
    joint = network.parts_key is not None
    part_terms = [name for name in ("composition", "decomposition") if getattr(loss, name) is not None]
    if joint and loss.dino.skip_same_index:
        raise ValueError(
            f"config: method {method!r} is the joint phase (network_def#parts_key {network.parts_key!r}: the teacher "
            "sees the whole, which no student view repeats), but skip_same_index is true and would drop real "
            "teacher/student pairs; set skip_same_index false (it is for configs/adamv2_dino.json)."
        )
    if not joint and part_terms:
        raise ValueError(
            f"config: method {method!r} has network_def#parts_key null (the localizability-only phase: no parts), "
            f"but the loss has {part_terms}; set loss#composition and loss#decomposition null or give parts_key."
        )
    if network.num_prototypes != loss.dino.out_dim:
        raise ValueError(
            f"config: the DINO head has {network.num_prototypes} outputs but loss#dino#out_dim is "
            f"{loss.dino.out_dim}; both come from num_prototypes, do not override one of them alone."
        )


def loss_terms_output(
    total_tag: str = "train_loss", prefix: str = "loss_terms/", key: str = "loss_terms"
) -> Callable[[Mapping[str, Any]], dict[str, torch.Tensor]]:
    """An ``output_transform`` for MONAI's ``TensorBoardStatsHandler``: the engine's loss terms as scalar tags.

    Args:
        total_tag: tag of the total (``"loss"`` term).
        prefix: prefix of the other terms' tags.
        key: key of the terms in ``engine.state.output`` (see :class:`~modan_monai.engines.Trainer`).

    Returns:
        ``output -> {total_tag: total, prefix + name: term, ...}``.

    Example:
        >>> import torch
        >>> out = {"loss_terms": {"loss": torch.tensor(1.0), "global/variance": torch.tensor(0.5)}}
        >>> sorted(loss_terms_output()(out))
        ['loss_terms/global/variance', 'train_loss']
    """

    def transform(output: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        terms = output[key]
        return {(total_tag if name == "loss" else prefix + name): value for name, value in terms.items()}

    return transform
