"""Checkpoints of the whole run state, so a stopped run resumes exactly (DESIGN 4).

Host side, called only by the loop in `clipjax.experiment`. A checkpoint holds the round's
`algorithm.RunState` (server state, every population client's invariance state, last
reported times and received models, FLuID's server state, the virtual clock) and the number
of finished rounds, saved with orbax under `<workdir>/checkpoints/state_<round>`.
`metrics.jsonl` holds the rows; on resume the loop keeps the rows up to the checkpoint's round
and goes on from there. Keys are derived from (seed, round) and SecAgg's masks cancel exactly,
so the resumed metrics equal an uninterrupted run's (host seconds aside).

Crash-safe (DESIGN 4): a checkpoint is written into a temporary folder and renamed to
`state_<round>` only when complete, so a crash mid-save leaves no `state_*` folder that looks
finished; the newest `KEEP` are kept. `restore_newest` goes from the newest back and passes
over one that cannot be read (truncated, corrupt), saying so in one line.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import shutil
from typing import Callable

import jax
import numpy as np

from clipjax.round import algorithm
from clipjax.round import cohort

_PREFIX = "state_"
_TEMP = ".partial_"  # a save in progress; renamed to state_<round> when complete
_HOST = "host.npz"   # host values, exactly (orbax would restore float64 as float32)
KEEP = 2             # state checkpoints kept: the newest, and one to fall back on


def _device_tree(state: algorithm.RunState) -> dict:
  tree = {"server": state.server, "clip": state.clip, "fluid": state.fluid}
  return {k: v for k, v in tree.items() if v is not None}


def complete(folder: pathlib.Path) -> list[tuple[int, pathlib.Path]]:
  """(round, path) of every renamed (complete) state checkpoint in `folder`, newest first."""
  found = []
  for path in folder.glob(f"{_PREFIX}*"):
    suffix = path.name[len(_PREFIX):]
    if suffix.isdigit() and path.is_dir():
      found.append((int(suffix), path))
  return sorted(found, reverse=True)


def latest(folder: pathlib.Path) -> tuple[pathlib.Path, int] | None:
  """The newest complete state checkpoint in `folder` and its round, or None."""
  found = complete(folder)
  return (found[0][1], found[0][0]) if found else None


def save(folder: pathlib.Path, state: algorithm.RunState, rounds_done: int) -> None:
  """Saves the state after `rounds_done` rounds: written to a temporary folder, renamed when
  complete; the newest `KEEP` state checkpoints are kept."""
  import orbax.checkpoint as ocp  # imported lazily: only the loop checkpoints

  folder = folder.resolve()
  folder.mkdir(parents=True, exist_ok=True)
  temp = folder / f"{_TEMP}{rounds_done}_{os.getpid()}"
  if temp.exists():
    shutil.rmtree(temp)
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(temp / "device", _device_tree(state), force=True)
  checkpointer.wait_until_finished()
  models = {f"model_{v}": m for v, m in state.refs.models.items()}
  with open(temp / _HOST, "wb") as f:
    np.savez(f, virtual_time=np.float64(state.virtual_time),
             rounds_done=np.int64(rounds_done), reports_fit_full=state.reports.fit_full,
             reports_net=state.reports.net, refs_held=state.refs.held, refs_ref=state.refs.ref,
             **models)
    f.flush()
    os.fsync(f.fileno())
  path = folder / f"{_PREFIX}{rounds_done}"
  if path.exists():  # the same round saved again (a resumed run): the new one replaces it
    shutil.rmtree(path)
  os.replace(temp, path)
  for _, old in complete(folder)[KEEP:]:
    shutil.rmtree(old, ignore_errors=True)
  for stale in folder.glob(f"{_TEMP}*"):  # saves that a crash interrupted
    shutil.rmtree(stale, ignore_errors=True)


def restore(path: pathlib.Path, like: algorithm.RunState) -> tuple[algorithm.RunState, int]:
  """(state, finished rounds) from a checkpoint; `like` is a fresh state of the same run."""
  import orbax.checkpoint as ocp

  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, _device_tree(like))
  tree = ocp.StandardCheckpointer().restore((path / "device").resolve(), abstract)
  with np.load(path / _HOST) as host:
    models = {int(k[len("model_"):]): host[k] for k in host.files if k.startswith("model_")}
    state = dataclasses.replace(
        like, server=tree["server"], clip=tree["clip"], fluid=tree.get("fluid"),
        reports=cohort.Reports(host["reports_fit_full"], host["reports_net"]),
        refs=cohort.References(host["refs_held"], host["refs_ref"], models),
        virtual_time=float(host["virtual_time"]))
    return state, int(host["rounds_done"])


def restore_newest(folder: pathlib.Path, like: algorithm.RunState, rows_written: int,
                   say: Callable[[str], None] = print) -> tuple[algorithm.RunState, int]:
  """The newest state checkpoint that can be read and whose rounds `metrics.jsonl` holds, as
  (state, finished rounds); (like, 0) when there is none.

  A checkpoint that cannot be read is passed over with one line through `say`.
  """
  for rounds, path in complete(folder):
    if rounds > rows_written:
      continue
    try:
      return restore(path, like)
    except Exception as e:  # noqa: BLE001  any unreadable file: fall back to the one before
      first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
      say(f"checkpoint {path} cannot be read ({type(e).__name__}: {first}); passing over it")
  return like, 0


def save_params(path: pathlib.Path, params) -> None:
  """Saves the final global model alone (orbax), for use outside clipjax."""
  import orbax.checkpoint as ocp  # imported lazily: only the loop checkpoints

  path = pathlib.Path(path).resolve()
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(path, params, force=True)
  checkpointer.wait_until_finished()
