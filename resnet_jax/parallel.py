"""Devices and sharding: where arrays live, each process's share of a batch, and the two
ways of running a per-device function on every device (``config.parallel``).

A per-device function takes its replicated arguments (the train state, the
pipeline's resident arrays, ...) whole and its last argument, the batch, as this
device's slice; collectives run over the axis ``AXIS``. It returns what every
device agrees on.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

AXIS = "batch"


def replicated(devices: list[jax.Device]) -> NamedSharding:
    """Placement of one whole copy on each of ``devices``."""
    return NamedSharding(Mesh(np.array(devices), (AXIS,)), P())


def placement(config: ml_collections.ConfigDict) -> NamedSharding:
    """Where the state and the resident data live: pmap takes this process's devices,
    shard_map one array over the devices of all processes."""
    return replicated(jax.devices() if config.parallel == "shard_map" else jax.local_devices())


GPU_INSTALL = "pip install -U 'jax[cuda12]>=0.10.2,<0.13' (or jax[cuda13])"


def nvidia_gpu_present() -> bool:
    """Whether this machine has an NVIDIA driver, whatever JAX sees."""
    return Path("/proc/driver/nvidia/version").exists() or shutil.which("nvidia-smi") is not None


def devices_line(backend: str, devices: int, processes: int, gpu_present: bool) -> str:
    """The start-up line naming the devices a run uses, with a warning when an NVIDIA GPU
    is there but JAX sees only the CPU (a CPU-only jaxlib)."""
    line = f"devices: {devices} {backend} device(s), {processes} process(es)"
    if backend == "cpu" and gpu_present:
        line += ("\nwarning: an NVIDIA GPU is present but JAX sees only the CPU; install "
                 f"JAX's CUDA build: {GPU_INSTALL}")
    return line


def process_slice(global_size: int) -> tuple[int, int]:
    """(first place, count) of this process's contiguous share of a global batch of
    ``global_size`` (all of it in a single process)."""
    local = global_size // jax.process_count()
    return jax.process_index() * local, local


def process_share(global_batch: np.ndarray, axis: int = 0) -> np.ndarray:
    """This process's share (:func:`process_slice`) of a global batch along ``axis``."""
    first, local = process_slice(global_batch.shape[axis])
    return np.take(global_batch, np.arange(first, first + local), axis=axis)


def gather_json(value: Any) -> list[Any]:
    """Every process's JSON-serialisable ``value``, in process order; every process calls
    this together."""
    if jax.process_count() == 1:
        return [value]
    encoded = np.frombuffer(json.dumps(value).encode(), np.uint8)
    longest = int(np.max(multihost_utils.process_allgather(np.int64(len(encoded)))))
    padded = np.zeros(longest, np.uint8)
    padded[:len(encoded)] = encoded
    gathered = multihost_utils.process_allgather(padded)
    return [json.loads(bytes(row).rstrip(b"\0")) for row in np.asarray(gathered)]


def on_every_device(per_device: Callable, parallel: str, *, batch_axis: int = 0,
                    donate_first: bool = False) -> Callable:
    """``per_device`` run by ``parallel`` ('pmap' or 'shard_map') on every device of every
    process. The returned function takes the same arguments, the last one (a pytree of
    host arrays) being this process's share of the batch along ``batch_axis``;
    ``donate_first`` donates the first argument's buffers (the train state)."""
    return PARALLEL[parallel](per_device, batch_axis, donate_first)


def _pmapped(per_device: Callable, batch_axis: int, donate_first: bool) -> Callable:
    def build(num_whole: int) -> Callable:
        return jax.pmap(per_device, axis_name=AXIS, in_axes=(None,) * num_whole + (batch_axis,),
                        out_axes=None, donate_argnums=(0,) if donate_first else ())

    def split(leaf: np.ndarray) -> np.ndarray:
        shape = leaf.shape
        return leaf.reshape(*shape[:batch_axis], jax.local_device_count(), -1,
                            *shape[batch_axis + 1:])

    return _built_once(build, lambda whole: whole, split)


def _shard_mapped(per_device: Callable, batch_axis: int, donate_first: bool) -> Callable:
    mesh = Mesh(np.array(jax.devices()), (AXIS,))
    split = NamedSharding(mesh, P(*[None] * batch_axis, AXIS))
    whole = NamedSharding(mesh, P())

    def build(num_whole: int) -> Callable:
        # check_vma=False keeps pmap's semantics: with it on, the gradient with respect to
        # the replicated parameters would already be summed over devices before the pmean.
        return jax.jit(jax.shard_map(per_device, mesh=mesh,
                                     in_specs=(P(),) * num_whole + (split.spec,),
                                     out_specs=P(), check_vma=False),
                       donate_argnums=(0,) if donate_first else ())

    def place(args: list) -> list:  # host scalars and arrays: the same value everywhere
        return [jax.device_put(a, whole) if isinstance(a, np.ndarray | np.generic) else a
                for a in args]

    def global_batch(share: np.ndarray) -> jax.Array:
        shape = list(share.shape)
        shape[batch_axis] *= jax.process_count()
        return jax.make_array_from_process_local_data(split, share, tuple(shape))

    return _built_once(build, place, global_batch)


def _built_once(build: Callable[[int], Callable], place: Callable[[list], list],
                per_leaf: Callable) -> Callable:
    """The parallel function, built at its first call (it needs the argument count)."""
    built: list[Callable] = []

    def call(*args):
        *whole, batch = args
        if not built:
            built.append(build(len(whole)))
        return built[0](*place(whole), jax.tree.map(per_leaf, batch))

    return call


# config.parallel: how the per-device functions run on every device.
PARALLEL = {"pmap": _pmapped, "shard_map": _shard_mapped}
