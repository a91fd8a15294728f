"""One rank of the data-parallel gradient test (tests/train/test_distributed.py), run as a script.

Builds the run exactly as ``pretrain`` does (``loop._fit`` replaced to keep the job), draws this
rank's first batch from the run's loader, runs one ``loop._backward`` (DDP averages the
gradients over the ranks) and saves the batch and the gradients to ARGV[3].

    python ddp_worker.py IMAGE LABELS OUT   (with torchrun's RANK, WORLD_SIZE, ... set)

writes OUT.rank<RANK>.pt.
"""
from __future__ import annotations

import os
import sys
import warnings

import torch


def main(image: str, labels: str, out: str) -> None:
    from geoalps.train import loop

    jobs = []
    loop._fit = lambda job: jobs.append(job) or []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loop.pretrain([image], [labels], f"{out}.model.pt", size="tiny", options=gradient_options())
        run = loop._set_up(jobs[0])
        without_random_drops(run.model)
        batch = next(iter(run.loader))
        loop._backward(run, batch)
    grads = {name: p.grad.detach().clone() for name, p in run.model.named_parameters() if p.grad is not None}
    torch.save({"image": batch["image"], "mask": batch["mask"], "grads": grads}, f"{out}.rank{os.environ['RANK']}.pt")


def without_random_drops(model) -> None:
    """No Dropout2d (classifier) nor stochastic depth (timm Swin's DropPath): both draw per tile
    from the global generator, so a batch split over two processes would drop other channels and
    blocks than the same tiles in one batch."""
    for module in model.modules():
        if isinstance(module, torch.nn.modules.dropout._DropoutNd):
            module.p = 0.0
        if hasattr(module, "drop_prob"):
            module.drop_prob = 0.0


def gradient_options():
    from geoalps.train.options import TrainOptions

    return TrainOptions(epochs=1, steps_per_epoch=1, batch_size=2, lr=1e-3, seed=7, augment=False, quiet=True,
                        threads=1, device="cpu", timeout_s=60)


if __name__ == "__main__":
    main(*sys.argv[1:4])
