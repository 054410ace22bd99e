"""Checkpoints of the whole run state, so a stopped run resumes exactly (DESIGN 4).

Host side, called only by the loop in `clipjax.experiment`. A checkpoint holds the round's
`algorithm.RunState` (server state, every population client's invariance state, last
reported times and received models, FLuID's server state, the virtual clock) and the number of finished rounds, saved with
orbax under `<workdir>/checkpoints/state_<round>`. `metrics.jsonl` holds the rows; on resume
the loop keeps the rows up to the checkpoint's round and goes on from there. Keys are derived
from (seed, round) and SecAgg's masks cancel exactly, so the resumed metrics equal an
uninterrupted run's (host seconds aside).
"""

from __future__ import annotations

import dataclasses
import pathlib
import shutil

import jax
import numpy as np

from clipjax.round import algorithm
from clipjax.round import cohort

_PREFIX = "state_"


_HOST = "host.npz"   # host values, exactly (orbax would restore float64 as float32)


def _device_tree(state: algorithm.RunState) -> dict:
  tree = {"server": state.server, "clip": state.clip, "fluid": state.fluid}
  return {k: v for k, v in tree.items() if v is not None}


def latest(folder: pathlib.Path) -> tuple[pathlib.Path, int] | None:
  """The newest complete state checkpoint in `folder` and its round, or None."""
  found = []
  for path in folder.glob(f"{_PREFIX}*"):
    suffix = path.name[len(_PREFIX):]
    if suffix.isdigit() and (path / _HOST).is_file():  # written last: the save completed
      found.append((int(suffix), path))
  if not found:
    return None
  rounds, path = max(found)
  return path, rounds


def save(folder: pathlib.Path, state: algorithm.RunState, rounds_done: int) -> None:
  """Saves the state after `rounds_done` rounds; older state checkpoints are removed."""
  import orbax.checkpoint as ocp  # imported lazily: only the loop checkpoints

  path = (folder / f"{_PREFIX}{rounds_done}").resolve()
  if path.exists():
    shutil.rmtree(path)
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(path / "device", _device_tree(state), force=True)
  checkpointer.wait_until_finished()
  models = {f"model_{v}": m for v, m in state.refs.models.items()}
  np.savez(path / _HOST, virtual_time=np.float64(state.virtual_time),
           rounds_done=np.int64(rounds_done), reports_fit_full=state.reports.fit_full,
           reports_net=state.reports.net, refs_held=state.refs.held, refs_ref=state.refs.ref,
           **models)
  for old in folder.glob(f"{_PREFIX}*"):
    if old.name != path.name and old.name[len(_PREFIX):].isdigit():
      shutil.rmtree(old, ignore_errors=True)


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


def save_params(path: pathlib.Path, params) -> None:
  """Saves the final global model alone (orbax), for use outside clipjax."""
  import orbax.checkpoint as ocp  # imported lazily: only the loop checkpoints

  path = pathlib.Path(path).resolve()
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(path, params, force=True)
  checkpointer.wait_until_finished()
