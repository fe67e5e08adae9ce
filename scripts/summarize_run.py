"""Per-epoch mean training loss of a bundle run, read from its TensorBoard event files.

Usage:
    python scripts/summarize_run.py bundles/pretrain/models/modan_mulsupcon [more run dirs ...]

Prints one line per epoch (mean of the iteration losses logged under ``train_loss``) and the first and
last epoch means, so a README can quote "the loss falls from A to B" from the real files.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from modan_monai.networks.checkpoint import load_weights_file
from modan_monai.utils.interrupt import sigterm_as_interrupt


def epoch_losses(run_dir: str | Path, tag: str = "train_loss") -> list[float]:
    """Mean of the ``tag`` scalars per epoch, epochs inferred from the ``lr`` / checkpoint iteration count.

    Args:
        run_dir: folder holding ``events.out.tfevents.*`` (the bundle's ``output_dir``).
        tag: scalar tag of the iteration loss.

    Returns:
        Per-epoch mean losses in epoch order.

    Raises:
        FileNotFoundError: when the folder has no event file.
        ValueError: when the tag is absent or the iteration count per epoch cannot be found.
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = Path(run_dir)
    if not list(run_dir.glob("events.out.tfevents.*")):
        raise FileNotFoundError(f"no TensorBoard event file in {run_dir}")
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    if tag not in acc.Tags()["scalars"]:
        raise ValueError(f"{run_dir}: no scalar '{tag}', found {acc.Tags()['scalars']}")
    events = {e.step: e.value for e in acc.Scalars(tag)}  # a resumed run rewrites no step twice
    checkpoints = sorted(run_dir.glob("checkpoint_epoch=*.pt"))
    if not checkpoints:
        raise ValueError(f"{run_dir}: no checkpoint_epoch=*.pt to read the iterations per epoch from")
    # a damaged or unsafe checkpoint is named (ValueError), not left to torch's own error
    per_epoch = int(load_weights_file(checkpoints[-1], what="checkpoint")["trainer"]["epoch_length"])
    steps = np.array(sorted(events))
    values = np.array([events[s] for s in steps])
    epochs = (steps - 1) // per_epoch
    return [float(values[epochs == e].mean()) for e in np.unique(epochs)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", nargs="+", help="bundle output folders")
    parser.add_argument("--tag", default="train_loss")
    args = parser.parse_args(argv)
    for run_dir in args.run_dirs:
        try:
            losses = epoch_losses(run_dir, args.tag)
        except (ValueError, FileNotFoundError, KeyError) as err:  # the run folder's problem, named: the last line
            print(f"error: {run_dir}: {err}", file=sys.stderr)
            return 1
        print(f"{run_dir}: " + " ".join(f"{x:.4f}" for x in losses))
        print(f"  first epoch {losses[0]:.4f} -> last epoch {losses[-1]:.4f} ({len(losses)} epochs)")
    return 0


if __name__ == "__main__":
    with sigterm_as_interrupt():  # Ctrl-C or SIGTERM: one line, no traceback (modan_monai._excepthook)
        sys.exit(main())
