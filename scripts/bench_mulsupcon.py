"""Benchmark MulSupConLoss (forward + backward) against a plain per-pair Python-loop reference.

Usage::

    PYTHONPATH=. python scripts/bench_mulsupcon.py [--device cpu|cuda] [--batch 256] [--repeats 20] [--threads 1]

Labels are random multi-hot vectors with one modality (of 4) and one anatomy (of 8) active (K = 12). The
vectorised loss is timed as the median of ``--repeats`` runs after warm-up; the loop reference is timed once
(it is slow) on the same inputs, and the two values are compared.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
import torch.nn.functional as F

from modan_monai.losses import MulSupConLoss

TARGET_MS = 2.0


def loop_reference(features: torch.Tensor, labels: torch.Tensor, temperature: float, threshold: float) -> torch.Tensor:
    """Per-pair implementation of methods.md section 1 (Jaccard weighting, T_base = T), plain Python loops."""
    z = F.normalize(features, dim=-1)
    num_images, num_views, _ = z.shape
    rows = [z[i, v] for v in range(num_views) for i in range(num_images)]  # view-major
    images = [i for v in range(num_views) for i in range(num_images)]
    sets = [set(torch.nonzero(row > 0).flatten().tolist()) for row in labels]
    # similarities computed once per pair up front, as any sensible loop code would
    sim = [[float(rows[a] @ rows[b]) / temperature for b in range(len(rows))] for a in range(len(rows))]
    total = 0.0
    for a in range(len(rows)):
        log_denominator = math.log(sum(math.exp(sim[a][k]) for k in range(len(rows)) if k != a))
        acc, count = 0.0, 0
        for b in range(len(rows)):
            if b == a:
                continue
            if images[a] == images[b]:
                jac = 1.0
            else:
                union = sets[images[a]] | sets[images[b]]
                jac = len(sets[images[a]] & sets[images[b]]) / len(union) if union else 0.0
            if jac >= threshold:
                acc += jac * (sim[a][b] - log_denominator)
                count += 1
        total += -acc / count if count else 0.0
    return torch.tensor(total / len(rows), dtype=torch.float64)


def make_inputs(
    batch: int, views: int, dim: int, device: torch.device, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(batch, views, dim, generator=generator)
    labels = torch.zeros(batch, 12)
    labels[torch.arange(batch), torch.randint(0, 4, (batch,), generator=generator)] = 1
    labels[torch.arange(batch), 4 + torch.randint(0, 8, (batch,), generator=generator)] = 1
    return features.to(device), labels.to(device)


def time_vectorised(loss_fn: MulSupConLoss, features: torch.Tensor, labels: torch.Tensor, repeats: int) -> float:
    """Median wall time in ms of forward + backward."""

    def step() -> None:
        leaf = features.detach().requires_grad_(True)
        loss_fn(leaf, labels).backward()
        if leaf.is_cuda:
            torch.cuda.synchronize()

    for _ in range(5):  # warm-up
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--views", type=int, default=2)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--temperature", type=float, default=0.07)
    parser.add_argument("--threshold", type=float, default=0.3)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's default)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda requested but CUDA is not available")
    device = torch.device(args.device)

    features, labels = make_inputs(args.batch, args.views, args.dim, device)
    loss_fn = MulSupConLoss(temperature=args.temperature, threshold=args.threshold)
    vectorised_ms = time_vectorised(loss_fn, features, labels, args.repeats)

    cpu_features, cpu_labels = features.detach().double().cpu(), labels.cpu()
    start = time.perf_counter()
    reference = loop_reference(cpu_features, cpu_labels, args.temperature, args.threshold)
    reference_ms = (time.perf_counter() - start) * 1000
    value = loss_fn(features.double(), labels).item()
    diff = abs(value - reference.item())

    print(f"device={device} threads={torch.get_num_threads()} N={args.batch} V={args.views} D={args.dim} K=12")
    print(f"vectorised forward+backward: {vectorised_ms:.3f} ms (median of {args.repeats})")
    print(f"loop reference forward:      {reference_ms:.1f} ms (1 run)")
    print(f"ratio reference/vectorised:  {reference_ms / vectorised_ms:.0f}x")
    print(f"loss vectorised={value:.10f} reference={reference.item():.10f} max abs diff={diff:.2e}")
    print(f"target <= {TARGET_MS} ms: {'met' if vectorised_ms <= TARGET_MS else 'NOT met'}")
    assert diff < 1e-8, f"vectorised and loop reference disagree by {diff}"


if __name__ == "__main__":
    main()
