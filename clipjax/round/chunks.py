"""The cohort trained and summed chunk by chunk (DESIGN 2.9).

Memory is set by the chunk, not by the cohort: each chunk's clients are put on the device(s),
trained by the method's jitted pruned round, summed into the round's accumulator (SecAgg:
masked and blinded) and dropped. With several processes each trains its own slice of the
cohort and the per-client measurements are gathered at the end.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from clipjax import multihost

PyTree = Any


def layout(rows: np.ndarray, size: int, multiple: int) -> list[tuple[np.ndarray, np.ndarray]]:
  """(rows, padded rows) per chunk of `rows`: padded to one fixed length (a multiple of
  `multiple`) with repeats of the chunk's first row, so every chunk has one shape and compiles
  once.

  Args:
    rows: int[n] cohort positions, in order.
    size: clients per chunk (0: all of them in one chunk).
    multiple: the padded length is a multiple of this (the number of devices sharded over).
  """
  num = len(rows)
  if num == 0:
    return []
  size = -(-min(size or num, num) // multiple) * multiple
  out = []
  for start in range(0, num, size):
    part = rows[start:start + size]
    out.append((part, np.concatenate([part, np.full(size - len(part), part[0])])))
  return out


def _take(tree, n: int, size: int):
  """The first n rows of every leaf (no copy when nothing was padded)."""
  return tree if n == size else jax.tree.map(lambda a: a[:n], tree)


def placement(mesh) -> tuple[Callable, int]:
  """(put, multiple): how a chunk's arrays go to the device(s), and the padding multiple."""
  if mesh is None:
    return jnp.asarray, 1
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("clients"))
  return (lambda a: jax.device_put(a, sharding)), mesh.devices.size


@dataclasses.dataclass
class Trained:
  """What the cohort's training left on the host, in cohort order (all processes' clients).

  Attributes:
    kept_units: {layer: int[C]} units each client trained.
    kept_params: int[C] parameters each client trained.
    loss_sum, num_seen: f32[C] summed training loss and examples seen.
    invariant, slack: int[C] invariant and slack units each client counted.
    clip_state: the population's invariance state with the cohort's rows updated.
    deltas: this process's per-chunk updates (kept only when `keep_deltas`, for FLuID).
    train_s, sum_s: host seconds of the training and of the chunk sums.
  """

  kept_units: dict
  kept_params: np.ndarray
  loss_sum: np.ndarray
  num_seen: np.ndarray
  invariant: np.ndarray
  slack: np.ndarray
  clip_state: PyTree
  deltas: list
  train_s: float
  sum_s: float


def train_and_sum(pruned_round: Callable, accumulator, *, params: PyTree, scores, clip_state,
                  choice, keep: np.ndarray, keys: jax.Array, ids: np.ndarray, data, chunk: int,
                  mesh, processes: multihost.Processes, keep_deltas: bool) -> Trained:
  """Trains this process's cohort clients chunk by chunk and adds each chunk to `accumulator`.

  Args:
    pruned_round: the method's jitted round (`methods.make_pruned_round`).
    accumulator: the round's `aggregation.Accumulator`, begun with the same layout.
    params: the global model w(t).
    scores: per-client invariance scores [C, ...] (None when the method needs none).
    clip_state: the population's invariance state [K, ...].
    choice: FLuID's server choice (None for other methods).
    keep: f32[C] keep fractions; keys: [C] typed client keys.
    ids: int[C] the cohort's population ids.
    data: the population's `settings.ClientData`.
    chunk, mesh, processes: the layout (`settings.ScaleSetting`).
    keep_deltas: keep the chunks' updates (FLuID reads them on the server).
  """
  put, multiple = placement(mesh)
  host_parts, deltas, clip_rows = [], [], []
  train_s = sum_s = 0.0
  for rows, padded in layout(processes.rows(len(ids)), chunk, multiple):
    n, pid = len(rows), ids[padded]
    tick = time.perf_counter()
    trained = jax.block_until_ready(pruned_round(
        params, None if scores is None else jax.tree.map(lambda a: put(a[padded]), scores),
        jax.tree.map(lambda a: put(a[pid]), clip_state), choice,
        put(keep[padded]), put(keys[padded]), put(data.x[pid]), put(data.y[pid]),
        put(data.valid[pid])))
    train_s += time.perf_counter() - tick
    out = _take(trained, n, len(padded))
    host_parts.append(jax.device_get({
        "kept": out.kept_units, "kept_params": out.kept_params, "loss": out.loss_sum,
        "seen": out.num_seen, "inv": out.invariant_units, "slack": out.slack_units}))
    if processes.count == 1:
      clip_state = jax.tree.map(lambda a, b: a.at[pid[:n]].set(b), clip_state, out.clip_state)
    else:
      clip_rows.append((pid[:n], jax.device_get(out.clip_state)))
    tick = time.perf_counter()
    accumulator.add(rows, out.delta, out.param_prune_mask)  # SecAgg: the chunk's masking
    sum_s += time.perf_counter() - tick
    if keep_deltas:
      deltas.append(out.delta)
    del trained, out
  if processes.count > 1:  # every process gets all clients' metrics and invariance state
    host_parts = sum(processes.allgather(host_parts), [])
    for pid, rows_state in sum(processes.allgather(clip_rows), []):
      clip_state = jax.tree.map(lambda a, b: a.at[pid].set(b), clip_state, rows_state)
  cat = lambda k: np.concatenate([np.asarray(p[k]) for p in host_parts])  # noqa: E731
  kept = {k: np.concatenate([np.asarray(p["kept"][k]) for p in host_parts])
          for k in host_parts[0]["kept"]}
  return Trained(kept_units=kept, kept_params=cat("kept_params"), loss_sum=cat("loss"),
                 num_seen=cat("seen"), invariant=cat("inv"), slack=cat("slack"),
                 clip_state=clip_state, deltas=deltas, train_s=train_s, sum_s=sum_s)


def process_layout(num: int, chunk: int, mesh, processes: multihost.Processes) -> list:
  """Every process's chunks of cohort rows, as `aggregation.Aggregator.begin` needs them."""
  _, multiple = placement(mesh)
  return [[rows for rows, _ in layout(processes.rows(num, p), chunk, multiple)]
          for p in range(processes.count)]


# Float32 copies of the D parameters one client of a chunk holds at once while it trains and
# its update is summed: its weights, gradient, optimiser state, delta, parameter prune mask,
# the quantised and masked SecAgg vector (uint32, D + 1 words) and working buffers. Calibrated
# on the 1,000-client SecAgg+ round (CIFAR-10, VGG-9 x0.25, D = 219,706, clip_compute, round 2,
# `scripts/bench_scale.py`, 2026-12-03): chunks of 50 and 351 clients peaked at 1.68 and 4.19
# GiB, 8.3 MiB a client, ~9.3 copies beside its 0.6 MB of images; 10 keeps the estimate above.
COPIES_PER_CLIENT = 10
# The default budget: a fraction of the host's RAM on CPU (the rest holds the population's data,
# JAX and the process), of the first device's memory on GPU/TPU.
HOST_BUDGET_FRACTION = 0.10
DEVICE_BUDGET_FRACTION = 0.50


def client_bytes(num_params: int, example_bytes: int) -> int:
  """The estimated memory one client of a chunk takes (`COPIES_PER_CLIENT` copies of its
  parameters and its training data)."""
  return COPIES_PER_CLIENT * 4 * int(num_params) + int(example_bytes)


def default_budget_bytes(backend: str | None = None) -> float:
  """`HOST_BUDGET_FRACTION` of the host's RAM on CPU; `DEVICE_BUDGET_FRACTION` of the first
  device's memory on an accelerator (its `bytes_limit`, when it reports one)."""
  if (backend or jax.default_backend()) != "cpu":
    stats = jax.local_devices()[0].memory_stats() or {}
    if stats.get("bytes_limit"):
      return DEVICE_BUDGET_FRACTION * float(stats["bytes_limit"])
  return HOST_BUDGET_FRACTION * float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def auto_chunk(cohort: int, *, per_client_bytes: int, budget_bytes: float,
               multiple: int = 1) -> int:
  """The largest chunk of at most `cohort` clients whose estimated memory fits the budget, a
  multiple of `multiple` (the devices a chunk is sharded over); at least `multiple`.

  Raises:
    ValueError: for a non-positive budget or client size.
  """
  if budget_bytes <= 0 or per_client_bytes <= 0:
    raise ValueError(f"the auto chunk needs a positive budget and client size, got "
                     f"{budget_bytes} and {per_client_bytes} bytes")
  fits = int(budget_bytes // per_client_bytes)
  chunk = min(fits, -(-int(cohort) // multiple) * multiple)
  return max(multiple, chunk // multiple * multiple)
