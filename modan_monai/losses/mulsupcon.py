"""Multi-label supervised contrastive loss (ModAn-MulSupCon, Eq. 3 of the paper).

The loss is assembled from small pure functions so that each step can be tested on its own:

1. :func:`stack_views` turns ``features (N, V, D)`` into ``M = V * N`` L2-normalised rows, view-major
   (row ``v * N + i`` is view ``v`` of image ``i``).
2. :func:`jaccard_similarity` gives the image-level label similarity ``J (N, N)``.
3. :func:`positive_weights` thresholds it into image-level positives and weights, with each image a
   positive of itself (``J = 1``: the other views of the same image, as in SimCLR).
4. :func:`mulsupcon_anchor_losses` computes the per-anchor losses from the rows; the ``(M, M)`` work is
   limited to the logits and their log-sum-exp (the positive sums are done per image).

Conventions (``methods.md`` section 1): the denominator runs over every row except the anchor, the
positive sum is divided by the *count* of positives, an anchor without positives contributes 0, the
loss is the mean over all anchors and is scaled by ``T / T_base``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..utils.distributed import distributed_world, gather_batch

__all__ = [
    "MulSupConLoss",
    "jaccard_similarity",
    "mulsupcon_anchor_losses",
    "positive_weights",
    "stack_views",
]

_WEIGHTINGS = ("jaccard", "none")


def jaccard_similarity(labels: torch.Tensor) -> torch.Tensor:
    """Pairwise Jaccard similarity of the active-label sets of multi-hot label rows.

    ``J_ab = |S(a) ∩ S(b)| / |S(a) ∪ S(b)|`` computed without loops as
    ``Y Yᵀ / (|y_a| + |y_b| − Y Yᵀ)``. A label is active when its entry is ``> 0`` (soft labels are
    binarised). Two rows with empty label sets have ``J = 0`` (never NaN).

    Args:
        labels: multi-hot labels of shape ``(N, K)`` (bool, integer or floating point).

    Returns:
        Floating-point tensor of shape ``(N, N)`` with values in ``[0, 1]`` (dtype of ``labels`` if it is
        floating point, else ``float32``).

    Raises:
        ValueError: when ``labels`` is not 2-D.

    Example:
        >>> jaccard_similarity(torch.tensor([[1, 0, 1], [1, 1, 0], [0, 0, 0]]))
        tensor([[1.0000, 0.3333, 0.0000],
                [0.3333, 1.0000, 0.0000],
                [0.0000, 0.0000, 0.0000]])
    """
    if labels.ndim != 2:
        raise ValueError(f"labels must have shape (N, K), got {tuple(labels.shape)}.")
    dtype = labels.dtype if labels.is_floating_point() else torch.float32
    active = (labels > 0).to(dtype)
    intersection = active @ active.T
    sizes = active.sum(dim=1)
    union = sizes[:, None] + sizes[None, :] - intersection
    # union is an integer count: clamping to 1 only touches the empty/empty pairs, which are set to 0
    return torch.where(union > 0, intersection / union.clamp(min=1), torch.zeros_like(union))


def stack_views(features: torch.Tensor) -> torch.Tensor:
    """L2-normalise ``features (N, V, D)`` and stack the views view-major into ``(V * N, D)``.

    Row ``v * N + i`` holds view ``v`` of image ``i`` (the order of ``torch.cat(torch.unbind(features, 1))``
    used by SimCLR/SupCon code).

    Args:
        features: projections of shape ``(N, V, D)``.

    Returns:
        Tensor of shape ``(V * N, D)`` with unit-norm rows.
    """
    num_images, num_views, dim = features.shape
    rows = features.transpose(0, 1).reshape(num_views * num_images, dim)
    return F.normalize(rows, p=2.0, dim=1)


def positive_weights(
    image_similarity: torch.Tensor, threshold: float, weighting: str = "jaccard"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Image-level positive mask and weights, with every image a positive of itself (its other views).

    Args:
        image_similarity: ``(N, N)`` Jaccard similarity between images (:func:`jaccard_similarity`), or zeros
            for SimCLR.
        threshold: ``τ ∈ (0, 1]``; image ``j`` is a positive of image ``i`` when ``J_ij ≥ τ``.
        weighting: ``"jaccard"`` (``w = J``) or ``"none"`` (``w = 1``).

    Returns:
        ``(positives, weights)``, both ``(N, N)``: the bool mask and the weights (0 off the mask). The diagonal
        (an image and itself) is set to ``J = 1`` beforehand: the views of one image are always positives.

    Example:
        >>> positives, weights = positive_weights(torch.tensor([[1.0, 0.25], [0.25, 0.0]]), threshold=0.3)
        >>> positives
        tensor([[ True, False],
                [False,  True]])
    """
    own_image = torch.arange(image_similarity.shape[0], device=image_similarity.device)
    return _positive_weights(image_similarity, own_image, threshold, weighting)


def _positive_weights(
    image_similarity: torch.Tensor, own_image: torch.Tensor, threshold: float, weighting: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`positive_weights` for ``(A, N)`` rows of anchors whose own images are ``own_image (A,)``."""
    own = torch.zeros_like(image_similarity, dtype=torch.bool)
    own[torch.arange(own.shape[0], device=own.device), own_image.to(own.device)] = True
    similarity = image_similarity.masked_fill(own, 1.0)
    positives = similarity >= threshold
    weights = similarity if weighting == "jaccard" else torch.ones_like(similarity)
    return positives, weights * positives.to(weights.dtype)


def mulsupcon_anchor_losses(
    anchors: torch.Tensor,
    rows: torch.Tensor,
    anchor_columns: torch.Tensor,
    anchor_groups: torch.Tensor,
    positives: torch.Tensor,
    weights: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """Per-anchor multi-label supervised contrastive losses (Eq. 3, without the ``T / T_base`` factor).

    ``ℓ_a = −Σ_{b∈P(a)} w_ab log p_ab / |P(a)|`` with ``log p_ab = z_a·z_b/T − log Σ_{k≠a} exp(z_a·z_k/T)``.
    Positives and weights are given per image: anchor ``a`` uses row ``g = anchor_groups[a]`` of ``positives``
    and ``weights`` (one row per anchor image), and row ``b`` of ``rows`` (view ``v`` of image ``j``) is a
    positive with weight ``weights[g, j]`` when ``positives[g, j]`` and ``b ≠ a``. The anchor's own image must be
    marked positive with weight 1 (see :func:`positive_weights`). Anchors without positives get ``ℓ_a = 0``.

    Args:
        anchors: ``(A, D)`` unit-norm anchor rows (a subset of ``rows``).
        rows: ``(M, D)`` unit-norm rows, view-major (``M = V * N``).
        anchor_columns: ``(A,)`` index of each anchor in ``rows`` (excluded from its own sums).
        anchor_groups: ``(A,)`` row of ``positives``/``weights`` that holds each anchor's image.
        positives: ``(G, N)`` bool image-level positive mask of the ``G`` anchor images.
        weights: ``(G, N)`` image-level weights (0 off the mask).
        temperature: ``T > 0``.

    Returns:
        ``(A,)`` per-anchor losses, finite even for anchors without positives.
    """
    num_images = positives.shape[1]
    num_views = rows.shape[0] // num_images
    scaled = anchors / temperature
    logits = scaled @ rows.T  # (A, M): the only (A, M) matrix besides its log-sum-exp
    self_mask = torch.zeros_like(logits, dtype=torch.bool)
    self_mask.scatter_(1, anchor_columns[:, None], True)
    # The anchor is removed from the denominator with the most negative finite value rather than -inf:
    # exp() of it is exactly 0 and no inf - inf or 0 * inf can appear in the forward or backward pass.
    log_denominator = torch.logsumexp(logits.masked_fill(self_mask, torch.finfo(logits.dtype).min), dim=1)
    self_logit = (scaled * anchors).sum(dim=1)  # z_a·z_a / T (a gather from logits would cost an (A, M) backward)
    # Σ_{b∈P(a)} w_ab z_a·z_b / T without an (A, M) weight matrix: sum the views of each image, weight the
    # images once per anchor image, then remove the anchor's own term (own image, weight 1).
    view_sums = rows.reshape(num_views, num_images, -1).sum(dim=0)  # (N, D)
    weighted_rows = (weights @ view_sums)[anchor_groups]  # (A, D)
    weighted_logits = (scaled * weighted_rows).sum(dim=1) - self_logit
    weight_sums = (num_views * weights.sum(dim=1) - 1.0)[anchor_groups]
    counts = (num_views * positives.sum(dim=1) - 1)[anchor_groups]
    numerators = weighted_logits - weight_sums * log_denominator  # Σ_b w_ab log p_ab
    losses = -numerators / counts.clamp(min=1).to(numerators.dtype)
    # without positives the numerator is 0 up to rounding of the self-term subtraction: make it exact
    return torch.where(counts > 0, losses, torch.zeros_like(losses))


class MulSupConLoss(nn.Module):
    """Multi-label supervised contrastive loss with Jaccard-weighted positives (ModAn-MulSupCon).

    Implements Eq. 3 of the ModAn-MulSupCon paper (multi-hot metadata y = onehot(modality) ++
    onehot(anatomy), positives are the rows whose Jaccard similarity to the anchor is ``≥ τ``, each
    weighted by that similarity)::

        ℓ_a = −(T / T_base) · Σ_{b∈P(a)} w_ab · log[ exp(z_a·z_b / T) / Σ_{k≠a} exp(z_a·z_k / T) ] / |P(a)|
        loss = mean over all M = V·N anchors

    The views of one image are always positives of each other (``J = 1``), so ``labels=None`` is SimCLR /
    NT-Xent (equal to :class:`monai.losses.ContrastiveLoss` for ``V = 2``), one-hot labels give SupCon on the
    class index for any ``τ ∈ (0, 1]``, and modality+anatomy labels with ``τ ∈ (1/3, 1]`` give SupCon on the
    combined class. Anchors without any positive contribute 0 (finite loss and gradients).

    The features are L2-normalised inside the loss (a no-op for already normalised projections).

    Args:
        temperature: ``T > 0``, default 0.07 (paper).
        threshold: positive threshold ``τ ∈ (0, 1]``, default 0.3 (paper).
        base_temperature: ``T_base``; ``None`` uses ``temperature`` (scale factor 1).
        weighting: ``"jaccard"`` (``w_ab = J_ab``, paper) or ``"none"`` (``w_ab = 1``, thresholded SupCon).
        gather_distributed: when True and ``torch.distributed`` is initialised with ``world_size > 1``,
            features (with gradients: an all_gather whose backward all-reduces the gradient) and labels
            are gathered from all ranks; the anchors are this rank's rows and the positives/denominator run
            over the global batch. The returned value is the mean over the local anchors; with DDP's
            gradient averaging (and the summing backward of all_gather) the parameter gradients equal those
            of the mean over all global anchors. Every rank must pass the same batch size. Without an
            initialised process group (or with one rank) this flag has no effect.

    Shapes:
        - features: ``(N, V, D)`` projections, ``V ≥ 1`` views per image (``V = 1`` only with labels).
        - labels: ``(N, K)`` multi-hot, or ``None`` (SimCLR).
        - output: scalar.

    Raises:
        ValueError: on invalid hyper-parameters (at construction) or input shapes (in ``forward``).

    Example:
        >>> loss_fn = MulSupConLoss(temperature=0.07, threshold=0.3)
        >>> features = torch.randn(8, 2, 128)  # 8 images, 2 views, 128-d projections
        >>> labels = torch.zeros(8, 12)
        >>> labels[torch.arange(8), torch.randint(0, 4, (8,))] = 1  # modality
        >>> labels[torch.arange(8), torch.randint(4, 12, (8,))] = 1  # anatomy
        >>> loss_fn(features, labels).shape
        torch.Size([])
    """

    def __init__(
        self,
        temperature: float = 0.07,
        threshold: float = 0.3,
        base_temperature: float | None = None,
        weighting: str = "jaccard",
        gather_distributed: bool = False,
    ) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}.")
        if not 0 < threshold <= 1:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}.")
        if base_temperature is not None and not base_temperature > 0:
            raise ValueError(f"base_temperature must be > 0 or None, got {base_temperature}.")
        if weighting not in _WEIGHTINGS:
            raise ValueError(f"weighting must be one of {_WEIGHTINGS}, got {weighting!r}.")
        self.temperature = float(temperature)
        self.threshold = float(threshold)
        self.base_temperature = float(temperature if base_temperature is None else base_temperature)
        self.weighting = weighting
        self.gather_distributed = bool(gather_distributed)

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature}, threshold={self.threshold}, base_temperature={self.base_temperature}, "
            f"weighting={self.weighting!r}, gather_distributed={self.gather_distributed}"
        )

    @staticmethod
    def _validate(features: torch.Tensor, labels: torch.Tensor | None) -> None:
        if features.ndim != 3:
            raise ValueError(f"features must have shape (N, V, D), got {tuple(features.shape)}.")
        if not features.is_floating_point():
            raise ValueError(f"features must be floating point, got dtype {features.dtype}.")
        num_images, num_views, dim = features.shape
        if num_views < 1 or num_images < 1 or dim < 1:
            raise ValueError(f"features must have N, V, D >= 1, got shape {tuple(features.shape)}.")
        if labels is None:
            if num_views < 2:
                raise ValueError(
                    f"features with a single view (shape {tuple(features.shape)}) need labels: "
                    "without labels the positives are the other views of the same image."
                )
        else:
            if labels.ndim != 2:
                raise ValueError(f"labels must have shape (N, K), got {tuple(labels.shape)}.")
            if labels.shape[0] != num_images:
                raise ValueError(
                    f"labels shape {tuple(labels.shape)} does not match features shape {tuple(features.shape)}: "
                    "N must agree."
                )
        if num_images * num_views < 2:
            raise ValueError(
                f"features shape {tuple(features.shape)} has fewer than 2 rows: the contrastive denominator is empty."
            )

    def forward(self, features: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Compute the loss.

        Args:
            features: ``(N, V, D)`` projections (normalised inside).
            labels: ``(N, K)`` multi-hot labels, or ``None`` for SimCLR / NT-Xent.

        Returns:
            Scalar loss tensor.

        Raises:
            ValueError: when the shapes are invalid.
        """
        self._validate(features, labels)
        if features.dtype in (torch.float16, torch.bfloat16):
            features = features.float()  # the exp/log-sum-exp terms are computed in at least float32
        if labels is not None:
            labels = labels.to(device=features.device, dtype=features.dtype)  # binarised in jaccard_similarity

        num_local, num_views, _ = features.shape
        offset = 0
        rank, world_size = distributed_world()
        if self.gather_distributed and world_size > 1:
            features, labels, offset = gather_batch(features, labels, rank, world_size)
        num_images = features.shape[0]

        rows = stack_views(features)  # (M, D), view-major
        device = rows.device
        local_images = torch.arange(offset, offset + num_local, device=device)
        anchor_groups = torch.arange(num_local, device=device).repeat(num_views)  # (A,), A = V * num_local
        anchor_columns = (torch.arange(num_views, device=device)[:, None] * num_images + local_images).reshape(-1)

        if labels is None:
            image_similarity = torch.zeros(num_local, num_images, dtype=rows.dtype, device=device)
        else:
            image_similarity = jaccard_similarity(labels.to(rows.dtype))[local_images]  # (num_local, N)
        positives, weights = _positive_weights(image_similarity, local_images, self.threshold, self.weighting)
        anchors = rows if offset == 0 and num_images == num_local else rows[anchor_columns]
        anchor_losses = mulsupcon_anchor_losses(
            anchors, rows, anchor_columns, anchor_groups, positives, weights, self.temperature
        )
        return (self.temperature / self.base_temperature) * anchor_losses.mean()
