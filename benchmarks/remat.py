"""What remat=True (each block recomputed in the backward pass) saves and costs.

Several minutes on a CPU (two resnet50 train steps compiled at 224x224):

    python -m benchmarks.remat [--steps 5] [--out benchmarks/results/remat-cpu.json]

Saved: the activations a train step keeps for its backward pass, counted as JAX's saved
residuals (``jax.vjp``'s, traced, nothing computed: the same on every backend) less the
parameters, which any backward pass keeps; for resnet50 and resnet152 at 224x224, per
image. Cost: the median time of a compiled train step (forward, backward, SGD update) of
resnet50 at 224x224, batch 16, with and without ``remat``, on this machine's first device
(its peak memory too where the device reports it).
"""

from __future__ import annotations

import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import optax

if not __package__:  # run as a file: import from the repository
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from resnet_jax import create_model
from resnet_jax.command_line import ArgumentParser, at_least, check_out

REPO = Path(__file__).resolve().parents[1]


def nbytes(tree: Any) -> int:
    return sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(tree))


def loss_of(model: Any) -> Any:
    def loss(params: Any, stats: Any, images: jax.Array, labels: jax.Array) -> jax.Array:
        logits, _ = model.apply({"params": params, "batch_stats": stats}, images, train=True,
                                mutable=["batch_stats"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return loss


def saved_activations(name: str, remat: bool, size: int = 224, batch: int = 1) -> int:
    """Bytes a train step of ``name`` keeps for its backward pass, beyond the parameters."""
    model = create_model(name, remat=remat)
    images = jax.ShapeDtypeStruct((batch, size, size, 3), jnp.float32)
    labels = jax.ShapeDtypeStruct((batch,), jnp.int32)
    variables = jax.eval_shape(model.init, jax.random.key(0), images)
    loss = loss_of(model)
    residuals = jax.eval_shape(
        lambda params, stats, x, y: jax.vjp(lambda p: loss(p, stats, x, y), params)[1],
        variables["params"], variables["batch_stats"], images, labels)
    return nbytes(residuals) - nbytes(variables["params"])


def step_seconds(remat: bool, steps: int, batch: int = 16, size: int = 224) -> dict[str, Any]:
    """The median seconds of a compiled resnet50 train step, and the device's peak memory."""
    model = create_model("resnet50", remat=remat)
    key = jax.random.key(0)
    images = jax.random.normal(key, (batch, size, size, 3), jnp.float32)
    labels = jnp.arange(batch) % 1000
    variables = model.init(key, images[:1])
    tx = optax.sgd(0.01, 0.9)
    loss = loss_of(model)

    @jax.jit
    def step(params: Any, opt_state: Any, stats: Any) -> tuple[Any, Any, jax.Array]:
        value, grads = jax.value_and_grad(loss)(params, stats, images, labels)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    params, opt_state = variables["params"], tx.init(variables["params"])
    params, opt_state, value = step(params, opt_state, variables["batch_stats"])  # compiles
    value.block_until_ready()
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        params, opt_state, value = step(params, opt_state, variables["batch_stats"])
        value.block_until_ready()
        times.append(time.perf_counter() - started)
    stats = jax.devices()[0].memory_stats() or {}
    return {"median_s": statistics.median(times), "steps": steps,
            "peak_bytes": stats.get("peak_bytes_in_use")}


def measure(steps: int) -> dict[str, Any]:
    saved = {}
    for name in ("resnet50", "resnet152"):
        plain, remat = saved_activations(name, False), saved_activations(name, True)
        saved[name] = {"plain_mib": plain / 2**20, "remat_mib": remat / 2**20,
                       "ratio": remat / plain}
    timed = {"plain": step_seconds(False, steps), "remat": step_seconds(True, steps)}
    timed["ratio"] = timed["remat"]["median_s"] / timed["plain"]["median_s"]
    device = jax.devices()[0]
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip()
    return {"saved_activations_per_image_224": saved, "resnet50_step_batch16_224": timed,
            "device": {"kind": device.device_kind, "platform": device.platform,
                       "cpu": platform.processor() or platform.machine()},
            "jax": jax.__version__, "commit": commit or None}


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m benchmarks.remat", description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=at_least(1), default=5, help="timed steps each way")
    parser.add_argument("--out", type=Path, help="also write the result to this JSON file")
    args = parser.parse_args(argv)
    if args.out:
        check_out(parser, args.out)
    result = measure(args.steps)
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
