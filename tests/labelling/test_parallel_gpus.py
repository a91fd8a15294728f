"""One GPU per local dask worker: ``--workers N --device cuda`` spreads the workers over the
machine's GPUs (worker i on GPU i mod their number); one GPU, CPU and explicit indices unchanged.

No GPU here: the workers' torch is told how many GPUs there are (``torch.cuda`` patched inside
each worker), and what :func:`geoalps.devices.resolve_device` (the resolver every engine loads
its model through) answers there is checked, together with the device made current."""
from __future__ import annotations

from unittest import mock

import pytest
import torch

from geoalps.devices import resolve_device, worker_cuda_index


def resolve_with_gpus(gpus: int, name: str) -> tuple[str, list[str]]:
    """In this process, as if it had ``gpus`` CUDA devices: the device ``name`` resolves to, and
    the devices made torch's current one meanwhile."""
    made_current = []
    with mock.patch.object(torch.cuda, "is_available", return_value=gpus > 0), \
            mock.patch.object(torch.cuda, "device_count", return_value=gpus), \
            mock.patch.object(torch.cuda, "set_device", side_effect=lambda d: made_current.append(str(torch.device(d)))):
        device = resolve_device(name)
    return str(device), made_current


def test_worker_i_uses_gpu_i_mod_the_gpus():
    assert [worker_cuda_index(slot, 2) for slot in range(5)] == [0, 1, 0, 1, 0]
    assert [worker_cuda_index(slot, 3) for slot in range(4)] == [0, 1, 2, 0]
    # one GPU or none, or not a worker: torch's default device, as before
    assert worker_cuda_index(3, 1) is None and worker_cuda_index(0, 0) is None
    assert worker_cuda_index(None, 4) is None


@pytest.fixture(scope="module")
def two_workers():
    from geoalps.labelling.parallel import TileRunner

    with TileRunner(workers=2) as runner:
        yield runner


def per_worker(runner, gpus: int, name: str) -> dict:
    """{worker name: (resolved device, devices made current)} over the runner's local workers."""
    answers = runner.client.run(resolve_with_gpus, gpus, name)
    names = {address: info["name"] for address, info in runner.client.scheduler_info()["workers"].items()}
    return {names[address]: answer for address, answer in answers.items()}


@pytest.mark.parametrize("name", ["cuda", "auto"])
def test_two_local_workers_on_two_gpus_get_one_each(two_workers, name):
    """Through TileRunner's real 2-worker LocalCluster: each worker's engine would load on its own
    GPU, which is also its current device (so CUDA's context and device-less calls stay there)."""
    assert per_worker(two_workers, 2, name) == {0: ("cuda:0", ["cuda:0"]), 1: ("cuda:1", ["cuda:1"])}
    # more GPUs than workers: the first ones
    assert per_worker(two_workers, 4, name) == {0: ("cuda:0", ["cuda:0"]), 1: ("cuda:1", ["cuda:1"])}


def test_one_gpu_cpu_and_named_devices_are_unchanged_in_workers(two_workers):
    assert per_worker(two_workers, 1, "cuda") == {0: ("cuda", []), 1: ("cuda", [])}
    assert per_worker(two_workers, 0, "auto") == {0: ("cpu", []), 1: ("cpu", [])}
    assert per_worker(two_workers, 2, "cpu") == {0: ("cpu", []), 1: ("cpu", [])}
    # a GPU the user named is the one used, by every worker
    assert per_worker(two_workers, 2, "cuda:1") == {0: ("cuda:1", []), 1: ("cuda:1", [])}


def test_outside_workers_cuda_is_torchs_default_device():
    """In-process runs (one worker, the driver, training): ``cuda`` stays unindexed."""
    assert resolve_with_gpus(2, "cuda") == ("cuda", [])
    assert resolve_with_gpus(2, "auto") == ("cuda", [])
