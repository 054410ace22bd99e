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

Several processes (`clipjax.multihost`): every process holds the whole run state (the round
gathers every client's state on every process), so process 0 alone saves it, and on restart
every process restores the checkpoint process 0 chose. orbax is therefore run per process
(`_alone`): the arrays go to disk as host (NumPy) arrays, which orbax saves from one process of
several, and come back onto the devices of the state they replace.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import shutil
from typing import Callable

import jax
import numpy as np

from clipjax import multihost
from clipjax.round import algorithm
from clipjax.round import cohort

_PREFIX = "state_"
_TEMP = ".partial_"  # a save in progress; renamed to state_<round> when complete
_HOST = "host.npz"   # host values, exactly (orbax would restore float64 as float32)
KEEP = 2             # state checkpoints kept: the newest, and one to fall back on


def _device_tree(state: algorithm.RunState) -> dict:
  tree = {"server": state.server, "clip": state.clip, "fluid": state.fluid}
  return {k: v for k, v in tree.items() if v is not None}


def _alone():
  """orbax options for this process on its own: no barrier with the other processes, which
  do not take part in a save (process 0 writes) and restore on their own."""
  import orbax.checkpoint as ocp  # imported lazily: only the loop checkpoints

  me = jax.process_index()
  return ocp.options.MultiprocessingOptions(primary_host=me, active_processes={me})


def state_path(folder: pathlib.Path, rounds_done: int) -> pathlib.Path:
  """Where the complete state checkpoint after `rounds_done` rounds lies in `folder`."""
  return pathlib.Path(folder) / f"{_PREFIX}{rounds_done}"


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
  checkpointer = ocp.StandardCheckpointer(multiprocessing_options=_alone())
  checkpointer.save(temp / "device", jax.device_get(_device_tree(state)), force=True)
  checkpointer.wait_until_finished()
  models = {f"model_{v}": m for v, m in state.refs.models.items()}
  with open(temp / _HOST, "wb") as f:
    np.savez(f, virtual_time=np.float64(state.virtual_time),
             rounds_done=np.int64(rounds_done), reports_fit_full=state.reports.fit_full,
             reports_net=state.reports.net, reports_summed=state.reports.summed,
             refs_held=state.refs.held, refs_ref=state.refs.ref, **models)
    f.flush()
    os.fsync(f.fileno())
  final = state_path(folder, rounds_done)
  if final.exists():  # the same round saved again (a resumed run): the new one replaces it
    shutil.rmtree(final)
  os.replace(temp, final)
  for _, old in complete(folder)[KEEP:]:
    shutil.rmtree(old, ignore_errors=True)
  for stale in folder.glob(f"{_TEMP}*"):  # saves that a crash interrupted
    shutil.rmtree(stale, ignore_errors=True)


def restore(folder: pathlib.Path, like: algorithm.RunState) -> tuple[algorithm.RunState, int]:
  """(state, finished rounds) from the checkpoint `folder`; `like` is a fresh state of the same
  run, whose arrays' devices the restored ones take."""
  import orbax.checkpoint as ocp

  fresh = _device_tree(like)
  host_tree = ocp.StandardCheckpointer(multiprocessing_options=_alone()).restore(
      (folder / "device").resolve(), jax.device_get(fresh))
  tree = jax.tree.map(lambda a, f: jax.device_put(a, getattr(f, "sharding", None)), host_tree,
                      fresh)
  with np.load(folder / _HOST) as host:
    models = {int(k[len("model_"):]): host[k] for k in host.files if k.startswith("model_")}
    state = dataclasses.replace(
        like, server=tree["server"], clip=tree["clip"], fluid=tree.get("fluid"),
        reports=cohort.Reports(host["reports_fit_full"], host["reports_net"],
                               np.asarray(host["reports_summed"], bool)
                               if "reports_summed" in host.files  # older checkpoints
                               else np.zeros(len(host["reports_net"]), bool)),
        refs=cohort.References(host["refs_held"], host["refs_ref"], models),
        virtual_time=float(host["virtual_time"]))
    return state, int(host["rounds_done"])


def restore_newest(folder: pathlib.Path, like: algorithm.RunState, rows_written: int,
                   say: Callable[[str], None] = print) -> tuple[algorithm.RunState, int]:
  """The newest state checkpoint that can be read and whose rounds `metrics.jsonl` holds, as
  (state, finished rounds); (like, 0) when there is none.

  A checkpoint that cannot be read is passed over with one line through `say`.
  """
  for rounds, found in complete(folder):
    if rounds > rows_written:
      continue
    try:
      return restore(found, like)
    except Exception as e:  # noqa: BLE001  any unreadable file: fall back to the one before
      say(f"checkpoint {found} cannot be read ({describe(e)}); passing over it")
  return like, 0


def describe(error: Exception) -> str:
  """`Type: first line` of an error, short enough for a one-line message."""
  first = str(error).strip().splitlines()[0][:160] if str(error).strip() else ""
  return f"{type(error).__name__}: {first}" if first else type(error).__name__


def restore_agreed(folder: pathlib.Path, like: algorithm.RunState, rows_written: int,
                   processes: multihost.Processes) -> tuple[algorithm.RunState, int]:
  """(state, finished rounds) to go on from, the same on every process (a collective): process
  0 picks as `restore_newest` does, the others restore the checkpoint it picked; (like, 0)
  when there is none.

  Raises:
    ValueError: when a process cannot read the checkpoint process 0 chose.
  """
  state, start = like, 0
  if processes.is_lead:
    state, start = restore_newest(folder, like, rows_written)
  start = processes.broadcast(start)
  error = None
  if start and not processes.is_lead:
    chosen = state_path(folder, start)
    try:
      state, done = restore(chosen, like)
      if done != start:
        raise ValueError(f"it holds round {done}")
    except Exception as e:  # noqa: BLE001  any failure: every process refuses in one line
      error = (f"process {processes.index} cannot read the checkpoint {chosen} that process 0 "
               f"resumes from ({describe(e)}); every process must see the same "
               "--workdir (a shared filesystem).")
  # A barrier too: process 0 writes the next checkpoint only once every process has read.
  errors = [e for e in processes.allgather(error) if e]
  if errors:
    raise ValueError(errors[0])
  return state, start


def save_params(path: pathlib.Path, params) -> None:
  """Saves the final global model alone (orbax), for use outside clipjax."""
  import orbax.checkpoint as ocp  # imported lazily: only the loop checkpoints

  path = pathlib.Path(path).resolve()
  checkpointer = ocp.StandardCheckpointer(multiprocessing_options=_alone())
  checkpointer.save(path, jax.device_get(params), force=True)
  checkpointer.wait_until_finished()
