"""`run(config, workdir)`: the one loop that owns every side effect of an experiment.

The round itself is `clipjax.round.algorithm.make_round`, an `(init, apply)` pair; this loop
only builds it from the config (`clipjax.round.build`), sequences rounds, evaluates, writes
`metrics.jsonl` (one row per round, aborted rounds included), checkpoints and prints.

A workdir goes on where it stopped: the same config resumes from the newest checkpoint, and
the same config with more `rounds` extends a run (`_check_workdir` says when it may). With
several processes (`clipjax.multihost`) process 0 decides both, writes the checkpoints, and
every process restores the one it chose.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pathlib
import shutil
import signal
import socket
import threading
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from clipjax import checkpoints, config_types, methods, models, multihost, secagg
from clipjax.config_types import ExperimentSpec
from clipjax.data import pooled_batch
from clipjax.fl import evaluate as evaluate_lib
from clipjax.reporting import summary as summary_lib
from clipjax.round import build
from clipjax.secagg import params as secagg_params_lib


def _to_device(arrays) -> tuple[jax.Array, jax.Array, jax.Array]:
  return jnp.asarray(arrays.x), jnp.asarray(arrays.y), jnp.asarray(arrays.valid)


def _read_rows(path: pathlib.Path) -> list[dict[str, Any]]:
  if not path.exists():
    return []
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _write_whole(path: pathlib.Path, text: str) -> None:
  """Writes `path` through a temporary file renamed over it: a crash leaves the old file or
  the new one, never a cut one (metrics.jsonl holds the rows a resume keeps)."""
  temp = path.with_name(f".{path.name}.partial_{os.getpid()}")
  with open(temp, "w") as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
  os.replace(temp, path)


def _evaluates(spec: ExperimentSpec, r: int) -> bool:
  """Whether round index `r` is evaluated: every `eval_every` rounds and the last one."""
  return bool(spec.eval_every) and ((r + 1) % spec.eval_every == 0 or r + 1 == spec.rounds)


def _is_eval_key(key: str) -> bool:  # what an evaluation adds to a row
  return key.startswith("test_") or key == "host_seconds_eval"


def _total_rounds_use(spec: ExperimentSpec) -> str | None:
  """Why rounds of this run depend on its total number of rounds, beyond the evaluation of
  the last one (`clipjax.round.build` passes `rounds` to FLuID's server alone); None if not."""
  if methods.METHODS[spec.method].prune_rule == "server_invariance":
    return (f"method {spec.method!r} scales FLuID's threshold schedule to the total rounds "
            "(clipjax/fluid.py, preset)")
  return None


@dataclasses.dataclass(frozen=True)
class _Workdir:
  """What process 0 found in the workdir; every process acts on the same.

  Attributes:
    error: a one-line refusal (raised as ValueError on every process), or None.
    old_rounds: the stored run's `rounds` when the config asks it for another number of rounds.
  """

  error: str | None = None
  old_rounds: int | None = None


def _check_workdir(out: pathlib.Path, config, spec: ExperimentSpec) -> _Workdir:
  """Whether `config` may run in `out`: a new workdir, the same run, or the same run with
  other `rounds` (extended, or shortened to no fewer rounds than are written) when the method
  does not depend on the total."""
  rows = len(_read_rows(out / "metrics.jsonl"))
  stored = (out / "config.json").read_text() if (out / "config.json").exists() else None
  if stored is None or not rows or config_types.same_run_config(stored, config):
    return _Workdir()
  old = config_types.other_rounds(stored, config)
  if old is None:
    return _Workdir(f"workdir {out} holds a run of another config (its config.json differs); "
                    "choose a new --workdir, or delete that folder to start over.")
  why = _total_rounds_use(spec)
  if why:
    return _Workdir(f"workdir {out} holds a {old}-round run and {why}, so it cannot change to "
                    f"{spec.rounds} rounds; choose a new --workdir for a {spec.rounds}-round run.")
  if spec.rounds < rows:
    return _Workdir(f"workdir {out} holds {rows} rounds already run (of {old}); "
                    f"--config.rounds={spec.rounds} is fewer: ask for at least {rows} rounds, "
                    "or choose a new --workdir.")
  return _Workdir(old_rounds=old)


class Interrupted(Exception):
  """A run stopped by Ctrl-C; its message says where the same command goes on."""


class _StopRequest:
  """Ctrl-C during the rounds: the first asks the loop to stop once the round ends (it is
  written and checkpointed, so the same command resumes exactly); a second stops at once.
  Installed only in the main thread (signal handlers can be set there alone)."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def _handle(self, signum, frame):
    if self.requested:
      raise KeyboardInterrupt
    self.requested = True

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGINT, self._handle)
    return self

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGINT, self._previous)
    return False


def _resume_note(saved: int, just_saved: bool = False) -> str:
  """What the same command does after a stop, the newest checkpoint being after `saved` rounds
  (`just_saved`: the round the run stopped after)."""
  if not saved:
    return "nothing was checkpointed yet: the same command starts over."
  if just_saved:
    return "the same command resumes."
  return f"the same command resumes after round {saved} (its checkpoint)."


LOCK_FILE = "run.lock"


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # someone else's live process
    return True
  return True


@contextlib.contextmanager
def _workdir_lock(folder: pathlib.Path):
  """Holds `folder/run.lock` (host and pid) while this process runs in `folder`.

  A second process started on the same workdir, e.g. two sweeps over one root, stops with a
  clear error before it writes anything, instead of interleaving its rows with the first's in
  one metrics.jsonl. A lock left behind by a process that died on this host is taken over.

  Raises:
    ValueError: while another live process (or one on another host) holds the lock.
  """
  path, host = folder / LOCK_FILE, socket.gethostname()
  for _ in range(2):
    try:
      fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
      try:
        holder_host, _, pid = path.read_text().strip().partition(" ")
      except FileNotFoundError:  # released meanwhile
        continue
      if holder_host == host and pid.isdigit() and not _alive(int(pid)):
        path.unlink(missing_ok=True)  # its process died without releasing it
        continue
      raise ValueError(f"workdir {folder} is in use by process {pid or '?'} on "
                       f"{holder_host or '?'} ({path}); wait for it to finish or stop it. If no "
                       f"such process runs any more, delete {path} and start again.") from None
    with os.fdopen(fd, "w") as f:
      f.write(f"{host} {os.getpid()}\n")
    break
  else:
    raise ValueError(f"workdir {folder}: could not take {path}; delete it and start again.")
  try:
    yield
  finally:
    path.unlink(missing_ok=True)


def run(config, workdir: str, *, stop_after: int | None = None,
        processes: multihost.Processes = multihost.SINGLE) -> dict[str, Any] | None:
  """Runs one experiment, or resumes or extends it; returns its summary (also printed).

  The whole run state is checkpointed every `checkpoint_every` rounds and at the last
  (`clipjax.checkpoints`). Started again with the same config in the same workdir, a run goes
  on from its newest checkpoint and writes the metrics an uninterrupted run writes (host
  seconds aside); a finished run is not run again. With a larger `rounds` a run goes on from
  its newest checkpoint to the new total and writes the metrics a run of that many rounds
  writes: the old last round's evaluation, off the new run's `eval_every` grid, is left out of
  its row, and summary.json is written for the new total. A method whose rounds depend on the
  total (`fluid`) is refused, as is a total below the rounds already written.

  Args:
    config: an `ml_collections.ConfigDict` (see `configs/base.py` for every key).
    workdir: output folder: config.json, metrics.jsonl, summary.json, checkpoints/.
    stop_after: stop after this many rounds as if interrupted, with the state checkpointed
      (for tests of resuming); returns None then.
    processes: this process's place when several run the experiment together
      (`clipjax.multihost`). Process 0 writes the outputs and the checkpoints into `workdir`;
      the others write theirs into `workdir/process_<i>` (metrics only: they must equal
      process 0's). Process 0 decides whether and where the run resumes; every process
      restores that checkpoint, so `workdir` must be one shared folder to resume. Ctrl-C in
      any process stops all of them after the same round.

  Raises:
    ValueError: for any bad config value, missing data, a workdir that holds another run, or
      one another process is running in (its `run.lock`).
    Interrupted: on Ctrl-C, with a one-line message.
  """
  spec = ExperimentSpec.from_config(config)
  lead_out = out = pathlib.Path(workdir)
  for folder in (out, *out.parents):
    if folder.exists() and not folder.is_dir():
      raise ValueError(f"workdir {out}: {folder} is a file, not a folder; choose another "
                       "--workdir.")
  if not processes.is_lead:
    out = out / f"process_{processes.index}"
  checks = processes.broadcast(_check_workdir(out, config, spec) if processes.is_lead else None)
  if checks.error:
    raise ValueError(checks.error)
  out.mkdir(parents=True, exist_ok=True)
  with _workdir_lock(out):
    return _run_in(config, spec, out, lead_out, checks, processes, stop_after)


def _run_in(config, spec: ExperimentSpec, out: pathlib.Path, lead_out: pathlib.Path, checks,
            processes: multihost.Processes, stop_after: int | None) -> dict[str, Any] | None:
  """`run` from its checked workdir on, while this process holds the workdir's lock."""
  if checks.old_rounds is not None:  # the summary and final model of the old total go
    (out / "summary.json").unlink(missing_ok=True)
    shutil.rmtree(out / "checkpoints" / "final", ignore_errors=True)
  _write_whole(out / "config.json", config.to_json_best_effort(indent=2, sort_keys=True))

  data = build.load_data(spec)
  num_clients = len(data.client_ids)
  if spec.num_clients == 0:  # the whole population: resolve what depends on its size
    spec = ExperimentSpec.from_config(config, population=num_clients)
  model, params = build.init_model(spec, data.num_classes)
  num_params = models.num_params(params)
  chunk, chunk_note = build.resolve_chunk(spec, data, params)
  if processes.is_lead and chunk_note:
    print(chunk_note, flush=True)
  round_algorithm = build.build_round(spec, data, model, params, processes, chunk=chunk)
  pooled_fn = lambda x, y, c, idx: pooled_batch(data.kind, x, y, c, idx, seq_len=data.seq_len or 80)  # noqa: E731
  evaluator = evaluate_lib.PooledEvaluator(model.apply, pooled_fn, spec.eval_batch_size,
                                           data.test.valid)
  test_x, test_y, _ = _to_device(data.test)
  slow_devices = build.device_population(spec).straggler

  def evaluate(row: dict[str, Any], server_params) -> None:
    tick = time.perf_counter()
    row.update(evaluator(server_params, test_x, test_y).summary())
    row["host_seconds_eval"] = time.perf_counter() - tick

  rows = _read_rows(out / "metrics.jsonl")
  state, start = checkpoints.restore_agreed(lead_out / "checkpoints", round_algorithm.init(params),
                                           len(rows), processes)
  if len(rows) < start:  # a process other than 0 killed before it wrote them
    rows = _read_rows(lead_out / "metrics.jsonl")
  history = rows[:start]  # rows after the checkpoint are written again
  for r, row in enumerate(history):  # a changed total moves the evaluation of the last round
    if not _evaluates(spec, r):
      for key in [k for k in row if _is_eval_key(k)]:
        del row[key]
    elif "test_accuracy" not in row and r + 1 == start:  # shortened to the rounds written
      evaluate(row, state.server.params)
  if checks.old_rounds is not None and processes.is_lead:
    where = (f"goes on from its checkpoint after round {start}" if start else
             "has no checkpoint to go on from and starts over")
    print(f"{out}: rounds changed from {checks.old_rounds} to {spec.rounds}; the run {where}.",
          flush=True)
  if start == spec.rounds and (out / "summary.json").exists():
    summary = json.loads((out / "summary.json").read_text())
    print(f"{out}: finished earlier ({start} rounds); not run again.")
    summary_lib.print_summary(summary, history)
    return summary
  _write_whole(out / "metrics.jsonl", "".join(json.dumps(row) + "\n" for row in history))
  progress = summary_lib.progress(spec.rounds, desc=f"{spec.data.name}/{spec.method}", start=start)
  saved = r = start
  stop = _StopRequest()
  with (out / "metrics.jsonl").open("a") as metrics_file, stop:
    try:
      for r in progress:
        tick = time.perf_counter()
        state, row = round_algorithm.apply(state, r)
        cohort = np.asarray(row.get("cohort", np.arange(num_clients)), np.int64)
        row["true_stragglers"] = np.flatnonzero(slow_devices[cohort]).tolist()  # cohort positions
        if _evaluates(spec, r):
          evaluate(row, state.server.params)
        row["host_seconds"] = time.perf_counter() - tick
        metrics_file.write(json.dumps(row) + "\n")
        metrics_file.flush()
        history.append(row)
        summary_lib.update_progress(progress, row)
        # Ctrl-C reaches one process: all stop after the same round.
        stopping = any(processes.allgather(stop.requested))
        ending = stopping or r + 1 == stop_after
        if r + 1 == spec.rounds or ending or (
            spec.checkpoint_every and (r + 1) % spec.checkpoint_every == 0):
          if processes.is_lead:
            checkpoints.save(lead_out / "checkpoints", state, r + 1)
          saved = r + 1
        if ending:
          processes.allgather(saved)  # every process leaves once the checkpoint is complete
        if r + 1 == stop_after:
          return None
        if stopping and r + 1 < spec.rounds:
          raise Interrupted(f"stopped after round {r + 1} of {spec.rounds}; "
                            + _resume_note(r + 1, just_saved=True))
    except KeyboardInterrupt:  # a second Ctrl-C: stop at once
      raise Interrupted(f"stopped in round {r + 1} of {spec.rounds}; "
                        + _resume_note(saved)) from None
  if processes.is_lead:
    checkpoints.save_params(lead_out / "checkpoints" / "final", state.server.params)
  summary = summary_lib.summarize(spec, history, num_params=num_params, clients=num_clients)
  summary["data_source"] = data.source  # the raw files read and their sha256
  if spec.secagg.enabled:
    secagg_params = secagg.choose_parameters(spec.clients_per_round, **build.key_agreement_kwargs(spec))
    summary["secagg_parameters"] = secagg_params.as_dict()
    summary["aborted_rounds"] = sum("aborted" in row for row in history)
    summary["nonfinite_dropouts"] = sum(len(row.get("secagg_nonfinite", ())) for row in history)
    if spec.secagg.dropout_rate > 0:  # Binomial drop-outs: the analysis' d does not cover them
      summary["p_abort_injected"] = secagg_params_lib.abort_bound_under_rate(
          secagg_params, spec.secagg.dropout_rate)
  summary_lib.print_summary(summary, history)
  if spec.secagg.enabled:
    print(f"{secagg_params.describe()}\naborted rounds: {summary['aborted_rounds']}, "
          f"clients left out for non-finite updates: {summary['nonfinite_dropouts']}")
    if "p_abort_injected" in summary:
      print(f"injected drop-outs (secagg.dropout_rate={spec.secagg.dropout_rate:g}, Binomial(n, "
            f"rate) clients, not at most {secagg_params.threat.counts(secagg_params.num_clients)[1]}"
            f"): P[abort] <= {summary['p_abort_injected']:.3g} per round")
  _write_whole(out / "summary.json", json.dumps(summary, indent=2))
  return summary
