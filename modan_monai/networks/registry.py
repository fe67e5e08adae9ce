"""The encoder registry: one table of encoder architectures, and ``spec -> initialised encoder`` for every tool.

Every downstream tool (the classify and segment bundles, ``scripts/run_cv.py``, ``scripts/run_segmentation.py``,
``scripts/embed.py``) builds its encoder with :func:`build_encoder`, from one of these specs:

- ``"scratch"``: random (PyTorch default) initialisation;
- ``"imagenet:<file>"``: a torchvision-style ResNet-18 ``state_dict`` in a local file, or a ResNet-50 one with
  ``arch="resnet50"`` (see :func:`~modan_monai.networks.initialise_encoder` for the mapping; nothing is downloaded);
- the path of an encoder checkpoint (``encoder.pt``, format ``modan_monai.encoder.v1``, which records ``arch`` and
  ``encoder_kwargs``) or of a full training checkpoint of any pretraining method (the network state dict of a
  ``ContrastiveModel`` / ``MLVICXModel`` / ``ClassificationModel`` / ``SegmentationUNet``, with or without a
  ``module.`` DDP prefix).

The architecture comes from the checkpoint: an encoder checkpoint names it, a training checkpoint's state dict
is matched against the registered architectures (keys and shapes, so the stem is recognised too). ``arch=`` and
explicit constructor arguments override what the checkpoint says; the weights then load strictly and a mismatch
raises a ``ValueError`` naming the missing, unexpected and shape-mismatched keys.

The table (:func:`encoder_architectures`), with the built-in entries:

======================  ==================================  ==================================================
name                    class                               FlexibleUNet backbones
======================  ==================================  ==================================================
``resnet18``            :class:`ResNet18Encoder`            ``modan_resnet18_3x3``, ``modan_resnet18_7x7``
``cb_resnet18``         :class:`CBResNet18Encoder` (MLVICX) ``modan_cb_resnet18_3x3``, ``modan_cb_resnet18_7x7``
``resnet50``            :class:`ResNet50Encoder` (Adam-v2)  ``modan_resnet50_3x3``, ``modan_resnet50_7x7``
======================  ==================================  ==================================================

An Adam-v2 training checkpoint (``teacher.encoder.*`` keys) gives its EMA teacher's backbone. More architectures are
added with :func:`register_encoder`; their FlexibleUNet backbones are derived from the same entry.
"""

from __future__ import annotations

import inspect
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint import ENCODER_CHECKPOINT_FORMAT, _extract_encoder_state, read_checkpoint
from .init import initialise_encoder, parse_encoder_spec
from .nets.cb_resnet_encoder import CBResNet18Encoder
from .nets.flexunet_encoders import UNetVariant, register_flexunet_backbones, unregister_flexunet_backbones
from .nets.resnet50_encoder import ResNet50Encoder
from .nets.resnet_encoder import ResNet18Encoder

__all__ = [
    "DEFAULT_ARCH",
    "EncoderArchitecture",
    "UNetVariant",
    "build_encoder",
    "encoder_arch",
    "encoder_architectures",
    "get_architecture",
    "register_encoder",
    "resolve_encoder",
    "unregister_encoder",
]

#: architecture of ``"scratch"`` / ImageNet specs and of state dicts no registered architecture matches
DEFAULT_ARCH = "resnet18"

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_LEVEL_CHANNELS: tuple[int, ...] = (64, 64, 128, 256, 512)
_RESNET50_CHANNELS: tuple[int, ...] = (64, 256, 512, 1024, 2048)
_RESNET_VARIANTS: dict[str, UNetVariant] = {
    "3x3": UNetVariant({"stem": "3x3"}, (1, 2, 4, 8, 16)),
    "7x7": UNetVariant({"stem": "7x7"}, (2, 4, 8, 16, 32)),
}


@dataclass(frozen=True)
class EncoderArchitecture:
    """One row of the encoder table.

    Attributes:
        name: the ``arch`` recorded in encoder checkpoints.
        encoder_class: the encoder (``forward``: ``(B, C, *spatial) -> (B, out_features)``, ``encoder_kwargs``).
        defaults: constructor arguments (the class's signature defaults, updated by the registered ones).
        feature_channels: channels of the ``forward_features`` maps; empty when there is no FlexibleUNet backbone.
        unet_variants: FlexibleUNet backbone variants (``modan_<name>_<variant>``).
        flexunet_class: the derived FlexibleUNet backbone class, or ``None``.
        description: one line for tables and errors.
    """

    name: str
    encoder_class: type[nn.Module]
    defaults: Mapping[str, Any]
    feature_channels: tuple[int, ...] = ()
    unet_variants: Mapping[str, UNetVariant] = field(default_factory=dict)
    flexunet_class: type[nn.Module] | None = None
    description: str = ""

    @property
    def backbones(self) -> list[str]:
        """The FlexibleUNet backbone names of this architecture."""
        return [f"modan_{self.name}_{v}" for v in self.unet_variants]


_ARCHITECTURES: dict[str, EncoderArchitecture] = {}


def _constructor_parameters(cls: type) -> tuple[dict[str, Any], bool]:
    """``({name: default or inspect.Parameter.empty}, takes **kwargs)`` of ``cls.__init__`` (without ``self``)."""
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    named = {
        p.name: p.default for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }
    return named, any(p.kind == p.VAR_KEYWORD for p in params)


def _check_arguments(arch: str, cls: type, kwargs: Mapping[str, Any], where: str) -> None:
    named, open_ended = _constructor_parameters(cls)
    unknown = sorted(k for k in kwargs if k not in named)
    if unknown and not open_ended:
        raise ValueError(f"{where}: {arch!r} ({cls.__name__}) takes no argument {unknown}; it takes {sorted(named)}.")


def register_encoder(
    name: str,
    encoder_class: type[nn.Module],
    defaults: Mapping[str, Any] | None = None,
    *,
    feature_channels: Sequence[int] | None = None,
    unet_variants: Mapping[str, UNetVariant] | None = None,
    description: str = "",
) -> EncoderArchitecture:
    """Add an encoder architecture to the table (and its FlexibleUNet backbones to MONAI's registry).

    The class must map ``(B, C, *spatial)`` to ``(B, out_features)`` with an integer ``out_features`` (the
    classifier's input), and expose ``encoder_kwargs``: the constructor arguments that rebuild it (stored in
    encoder checkpoints by :func:`~modan_monai.networks.save_encoder`). For a FlexibleUNet backbone it also needs
    ``forward_features(x) -> list of maps`` and ``spatial_dims`` / ``in_channels`` constructor arguments.

    Args:
        name: the ``arch`` name (lower case, digits, ``_``), e.g. ``"convnext_b"``.
        encoder_class: the encoder class; one class has one name.
        defaults: constructor arguments that replace the class's own defaults for this name.
        feature_channels: channels of the ``forward_features`` maps (e.g. ``(64, 64, 128, 256, 512)``); with
            ``unet_variants``, derives the FlexibleUNet backbones.
        unet_variants: variant name -> :class:`UNetVariant` (the constructor arguments selecting it and the
            strides of its maps), e.g. ``{"3x3": UNetVariant({"stem": "3x3"}, (1, 2, 4, 8, 16))}``.
        description: one line describing the architecture.

    Returns:
        The new entry.

    Raises:
        ValueError: a bad or taken name, a class already registered under another name, a class without
            ``encoder_kwargs`` / ``out_features``, unknown default arguments, or FlexibleUNet information that does
            not fit (see :func:`~modan_monai.networks.nets.flexunet_encoders.register_flexunet_backbones`).

    Example:
        >>> from modan_monai.networks.nets import ResNet18Encoder
        >>> class WideStem(ResNet18Encoder):
        ...     pass
        >>> entry = register_encoder("doc_widestem", WideStem, {"stem": "7x7"})
        >>> build_encoder("scratch", arch="doc_widestem").stem
        '7x7'
        >>> unregister_encoder("doc_widestem")
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"encoder name must match {_NAME.pattern} (it names FlexibleUNet backbones), got {name!r}.")
    if name in _ARCHITECTURES:
        raise ValueError(f"encoder {name!r} is already registered ({_ARCHITECTURES[name].encoder_class.__name__}).")
    if not (isinstance(encoder_class, type) and issubclass(encoder_class, nn.Module)):
        raise ValueError(f"encoder {name!r}: encoder_class must be a torch.nn.Module subclass, got {encoder_class!r}.")
    taken = [a.name for a in _ARCHITECTURES.values() if a.encoder_class is encoder_class]
    if taken:
        raise ValueError(f"encoder {name!r}: {encoder_class.__name__} is already registered as {taken[0]!r}.")
    missing = [a for a in ("encoder_kwargs", "out_features") if not hasattr(encoder_class, a)]
    if missing:
        raise ValueError(f"encoder {name!r}: {encoder_class.__name__} has no {missing} (see register_encoder).")
    defaults = dict(defaults or {})
    _check_arguments(name, encoder_class, defaults, f"register_encoder({name!r}) defaults")
    signature_defaults, _ = _constructor_parameters(encoder_class)
    full_defaults = {k: v for k, v in signature_defaults.items() if v is not inspect.Parameter.empty}
    full_defaults.update(defaults)

    variants = dict(unet_variants or {})
    if bool(variants) != bool(feature_channels):
        raise ValueError(f"encoder {name!r}: a FlexibleUNet backbone needs both feature_channels and unet_variants.")
    for variant, spec in variants.items():
        if not isinstance(spec, UNetVariant):
            raise ValueError(f"encoder {name!r}: unet_variants[{variant!r}] must be a UNetVariant, got {spec!r}.")
        _check_arguments(name, encoder_class, spec.kwargs, f"encoder {name!r} variant {variant!r}")
    flexunet_class = (
        register_flexunet_backbones(name, encoder_class, tuple(feature_channels or ()), variants) if variants else None
    )
    entry = EncoderArchitecture(
        name=name,
        encoder_class=encoder_class,
        defaults=full_defaults,
        feature_channels=tuple(int(c) for c in feature_channels or ()),
        unet_variants=variants,
        flexunet_class=flexunet_class,
        description=description,
    )
    _ARCHITECTURES[name] = entry
    return entry


def unregister_encoder(name: str) -> None:
    """Remove an architecture and its FlexibleUNet backbones (e.g. a plugin's, or one registered in a test).

    Args:
        name: a registered name.

    Raises:
        ValueError: when ``name`` is not registered.
    """
    get_architecture(name)
    unregister_flexunet_backbones(name)
    del _ARCHITECTURES[name]


def get_architecture(name: str) -> EncoderArchitecture:
    """The table entry of ``name``.

    Raises:
        ValueError: naming the registered architectures, for an unknown name.
    """
    if name not in _ARCHITECTURES:
        raise ValueError(
            f"unknown encoder arch {name!r}; registered: {sorted(_ARCHITECTURES)} "
            "(add one with modan_monai.networks.registry.register_encoder)."
        )
    return _ARCHITECTURES[name]


def encoder_architectures() -> dict[str, EncoderArchitecture]:
    """The table: ``{name: entry}`` in registration order (a copy)."""
    return dict(_ARCHITECTURES)


def encoder_arch(encoder: nn.Module) -> str:
    """The registered ``arch`` name of an encoder (as written into encoder checkpoints).

    The most specific registered class in the encoder's class hierarchy decides (a subclass of
    ``CBResNet18Encoder``, such as its FlexibleUNet backbone, is ``"cb_resnet18"``).

    Raises:
        ValueError: for an encoder that derives from no registered class.
    """
    names = {a.encoder_class: a.name for a in _ARCHITECTURES.values()}
    for cls in type(encoder).__mro__:
        if cls in names:
            return names[cls]
    raise ValueError(f"{type(encoder).__name__} is not a registered encoder architecture ({sorted(_ARCHITECTURES)}).")


def _candidates(kwargs: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Every registered architecture with its defaults and with each of its variants, updated by ``kwargs``."""
    out: list[tuple[str, dict[str, Any]]] = []
    for entry in _ARCHITECTURES.values():
        for extra in [{}, *(v.kwargs for v in entry.unet_variants.values())]:
            candidate = {**entry.defaults, **extra, **kwargs}
            if (entry.name, candidate) not in out:
                out.append((entry.name, candidate))
    return out


def _recognise(state: Mapping[str, torch.Tensor], kwargs: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """The first registered architecture (and variant) whose state-dict keys and shapes equal ``state``'s.

    The candidates are built on the ``meta`` device (no memory, no initialisation cost). When none matches, the
    default architecture is returned and the strict load that follows names the mismatched keys.
    """
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    for name, candidate in _candidates(kwargs):
        cls = _ARCHITECTURES[name].encoder_class
        try:
            with torch.device("meta"):
                expected = cls(**candidate).state_dict()
        except (TypeError, ValueError):  # arguments this architecture does not take
            continue
        if shapes == {k: tuple(v.shape) for k, v in expected.items()}:
            return name, candidate
    default = get_architecture(DEFAULT_ARCH)
    return DEFAULT_ARCH, {**default.defaults, **kwargs}


def resolve_encoder(spec: str = "scratch", arch: str | None = None, **kwargs: Any) -> tuple[str, dict[str, Any]]:
    """The architecture and full constructor arguments :func:`build_encoder` uses for ``spec``.

    Constructor arguments are, from weakest to strongest: the table's defaults, the checkpoint's
    ``encoder_kwargs`` (those the chosen class takes), then ``kwargs`` (``None`` values mean "not given").

    Args:
        spec: ``"scratch"``, ``"imagenet:<file>"`` or a checkpoint path (see the module docstring).
        arch: a registered architecture that overrides the checkpoint's; ``None``: the checkpoint's, else
            :data:`DEFAULT_ARCH`.
        kwargs: constructor arguments (``stem="7x7"``, ``spatial_dims``, ``reduction`` ...).

    Returns:
        ``(arch, constructor kwargs)``, e.g. ``("cb_resnet18", {"spatial_dims": 2, "in_channels": 1,
        "stem": "3x3", "reduction": 2, ...})``.

    Raises:
        FileNotFoundError: when the checkpoint does not exist.
        ValueError: an unknown ``arch`` (also one recorded in a checkpoint), an argument the architecture does not
            take, or a file without a state dict (each naming the file).
    """
    given = {k: v for k, v in kwargs.items() if v is not None}
    kind, path = parse_encoder_spec(spec)
    stored_arch: str | None = None
    stored: dict[str, Any] = {}
    if kind == "checkpoint":
        checkpoint = read_checkpoint(path)
        if checkpoint.get("format") == ENCODER_CHECKPOINT_FORMAT and "arch" in checkpoint:
            stored_arch = str(checkpoint["arch"])
            if stored_arch not in _ARCHITECTURES:
                raise ValueError(
                    f"checkpoint {path}: unknown arch {stored_arch!r}, registered: {sorted(_ARCHITECTURES)} "
                    "(add it with modan_monai.networks.registry.register_encoder)."
                )
            recorded = checkpoint.get("encoder_kwargs") or {}
            if not isinstance(recorded, Mapping):
                raise ValueError(f"checkpoint {path}: encoder_kwargs must be a dict, got {type(recorded).__name__}.")
            stored = dict(recorded)
        elif arch is None:
            state = _extract_encoder_state(checkpoint, f"checkpoint {path}")
            stored_arch, stored = _recognise(state, given)
    name = arch or stored_arch or DEFAULT_ARCH
    entry = get_architecture(name)
    named, open_ended = _constructor_parameters(entry.encoder_class)
    if name != stored_arch:  # another architecture than the checkpoint's: keep the arguments it takes
        stored = {k: v for k, v in stored.items() if k in named or open_ended}
    _check_arguments(name, entry.encoder_class, given, f"encoder for {spec!r}")
    return name, {**entry.defaults, **stored, **given}


def build_encoder(
    spec: str = "scratch",
    arch: str | None = None,
    *,
    unet_backbone: bool = False,
    logger: logging.Logger | None = None,
    restore_from: str | Path | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build the encoder ``spec`` describes and initialise it (the one ``spec -> encoder`` path).

    Args:
        spec: ``"scratch"``, ``"imagenet:<torchvision state_dict file>"``, or an encoder / training checkpoint of
            any pretraining method (see the module docstring).
        arch: a registered architecture overriding the checkpoint's (``None``: the checkpoint's, else
            ``"resnet18"``).
        unet_backbone: build the architecture's FlexibleUNet backbone class instead (same weights and keys;
            ``forward`` returns the decoder's maps; ``.backbone_name`` is its registered name).
        logger: receives what was loaded / re-initialised; default this module's logger.
        restore_from: the file whose weights the caller restores next (see
            :func:`~modan_monai.networks.initialise_encoder`); only changes what is logged.
        kwargs: constructor arguments overriding the checkpoint's (``stem``, ``spatial_dims``, ``in_channels``,
            ``reduction`` ...); ``None`` values are ignored.

    Returns:
        The initialised encoder, in training mode on the CPU. ``encoder.init_report`` holds ``source``, ``arch``,
        ``encoder_kwargs``, ``loaded`` (keys loaded) and ``reinitialised`` (keys left at random initialisation).

    Raises:
        FileNotFoundError: when a file does not exist.
        ValueError: an unknown architecture or argument, no FlexibleUNet backbone for ``unet_backbone``, or
            weights that do not fit the architecture (naming the file and the missing, unexpected and
            shape-mismatched keys).

    Example:
        >>> encoder = build_encoder("scratch", stem="7x7")
        >>> encoder.init_report["arch"], encoder.stem, encoder(torch.zeros(2, 1, 64, 64)).shape
        ('resnet18', '7x7', torch.Size([2, 512]))
    """
    log = logger or logging.getLogger(__name__)
    name, constructor = resolve_encoder(spec, arch, **kwargs)
    entry = get_architecture(name)
    cls: type[nn.Module] | None = entry.encoder_class
    if unet_backbone:
        cls = entry.flexunet_class
        if cls is None:
            raise ValueError(f"encoder {name!r} has no FlexibleUNet backbone (registered without unet_variants).")
    encoder = cls(**constructor)
    shown = {k: v for k, v in constructor.items() if v != entry.defaults.get(k, inspect.Parameter.empty) or k == "stem"}
    log.info(f"encoder arch {name!r} ({cls.__name__}, {shown}) for {spec!r}")
    report = initialise_encoder(encoder, spec, logger=log, restore_from=restore_from)
    encoder.init_report = {"arch": name, "encoder_kwargs": dict(encoder.encoder_kwargs), **report}
    return encoder


register_encoder(
    "resnet18",
    ResNet18Encoder,
    feature_channels=_LEVEL_CHANNELS,
    unet_variants=_RESNET_VARIANTS,
    description="ResNet-18 (MONAI ResNet), 3x3 stride-1 or 7x7 stride-2 stem",
)
register_encoder(
    "cb_resnet18",
    CBResNet18Encoder,
    feature_channels=_LEVEL_CHANNELS,
    unet_variants=_RESNET_VARIANTS,
    description="context-bottleneck ResNet-18 (MLVICX): a ContextBottleneck after the stem and each stage",
)
register_encoder(
    "resnet50",
    ResNet50Encoder,
    feature_channels=_RESNET50_CHANNELS,
    unet_variants=_RESNET_VARIANTS,
    description="ResNet-50 (MONAI ResNet, bottleneck blocks, torchvision layout), 7x7 stride-2 or 3x3 stride-1 stem",
)
