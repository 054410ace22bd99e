"""`run(config, workdir)`: the one loop that owns every side effect of an experiment.

The round itself is `clipjax.round.algorithm.make_round`, an `(init, apply)` pair; this loop
only builds it from the config (`clipjax.round.build`), sequences rounds, evaluates, writes
`metrics.jsonl` (one row per round, aborted rounds included), checkpoints and prints.
"""

from __future__ import annotations

import json
import pathlib
import signal
import threading
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from clipjax import checkpoints, config_types, models, multihost, secagg
from clipjax.config_types import ExperimentSpec
from clipjax.data import pooled_batch
from clipjax.fl import evaluate as evaluate_lib
from clipjax.reporting import summary as summary_lib
from clipjax.round import build


def _to_device(arrays) -> tuple[jax.Array, jax.Array, jax.Array]:
  return jnp.asarray(arrays.x), jnp.asarray(arrays.y), jnp.asarray(arrays.valid)


def _read_rows(path: pathlib.Path) -> list[dict[str, Any]]:
  if not path.exists():
    return []
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


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


def _resume_note(checkpointing: bool, saved: int, just_saved: bool = False) -> str:
  """What the same command does after a stop, the newest checkpoint being after `saved` rounds
  (`just_saved`: the round the run stopped after)."""
  if not checkpointing:
    return "runs over several processes are not checkpointed."
  if not saved:
    return "nothing was checkpointed yet: the same command starts over."
  if just_saved:
    return "the same command resumes."
  return f"the same command resumes after round {saved} (its checkpoint)."


def run(config, workdir: str, *, stop_after: int | None = None,
        processes: multihost.Processes = multihost.SINGLE) -> dict[str, Any] | None:
  """Runs one experiment, or resumes it; returns its summary (also printed as a table).

  The whole run state is checkpointed every `checkpoint_every` rounds and at the last
  (`clipjax.checkpoints`). Started again with the same config in the same workdir, a run goes
  on from its newest checkpoint and writes the metrics an uninterrupted run writes (host
  seconds aside); a finished run is not run again.

  Args:
    config: an `ml_collections.ConfigDict` (see `configs/base.py` for every key).
    workdir: output folder: config.json, metrics.jsonl, summary.json, checkpoints/.
    stop_after: stop after this many rounds as if interrupted, with the state checkpointed
      (for tests of resuming); returns None then.
    processes: this process's place when several run the experiment together
      (`clipjax.multihost`). Process 0 writes the outputs into `workdir`; the others write
      theirs into `workdir/process_<i>` (metrics only: they must equal process 0's). Runs over
      several processes are not checkpointed and do not resume.

  Raises:
    ValueError: for any bad config value, missing data, or a workdir that holds another run.
    Interrupted: on Ctrl-C, with a one-line message.
  """
  spec = ExperimentSpec.from_config(config)
  out = pathlib.Path(workdir)
  for folder in (out, *out.parents):
    if folder.exists() and not folder.is_dir():
      raise ValueError(f"workdir {out}: {folder} is a file, not a folder; choose another "
                       "--workdir.")
  if not processes.is_lead:
    out = out / f"process_{processes.index}"
  checkpointing = processes.count == 1
  out.mkdir(parents=True, exist_ok=True)
  config_json = config.to_json_best_effort(indent=2, sort_keys=True)
  if (out / "config.json").exists() and not config_types.same_run_config(
      (out / "config.json").read_text(), config):
    if _read_rows(out / "metrics.jsonl"):
      raise ValueError(f"workdir {out} holds a run of another config (its config.json differs); "
                       "choose a new --workdir, or delete that folder to start over.")
  (out / "config.json").write_text(config_json)

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

  state, start = round_algorithm.init(params), 0
  rows = _read_rows(out / "metrics.jsonl")
  if checkpointing:  # the newest readable checkpoint whose rounds metrics.jsonl holds
    state, start = checkpoints.restore_newest(out / "checkpoints", state, len(rows))
  history = rows[:start]  # rows after the checkpoint are written again
  if start == spec.rounds and (out / "summary.json").exists():
    summary = json.loads((out / "summary.json").read_text())
    print(f"{out}: finished earlier ({start} rounds); not run again.")
    summary_lib.print_summary(summary, history)
    return summary
  (out / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in history))
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
        if spec.eval_every and ((r + 1) % spec.eval_every == 0 or r + 1 == spec.rounds):
          eval_tick = time.perf_counter()
          row.update(evaluator(state.server.params, test_x, test_y).summary())
          row["host_seconds_eval"] = time.perf_counter() - eval_tick
        row["host_seconds"] = time.perf_counter() - tick
        metrics_file.write(json.dumps(row) + "\n")
        metrics_file.flush()
        history.append(row)
        summary_lib.update_progress(progress, row)
        if checkpointing and (r + 1 in (spec.rounds, stop_after) or stop.requested or (
            spec.checkpoint_every and (r + 1) % spec.checkpoint_every == 0)):
          checkpoints.save(out / "checkpoints", state, r + 1)
          saved = r + 1
        if r + 1 == stop_after:
          return None
        if stop.requested and r + 1 < spec.rounds:
          raise Interrupted(f"stopped after round {r + 1} of {spec.rounds}; "
                            + _resume_note(checkpointing, r + 1, just_saved=True))
    except KeyboardInterrupt:  # a second Ctrl-C: stop at once
      raise Interrupted(f"stopped in round {r + 1} of {spec.rounds}; "
                        + _resume_note(checkpointing, saved)) from None
  if checkpointing:
    checkpoints.save_params(out / "checkpoints" / "final", state.server.params)
  summary = summary_lib.summarize(spec, history, num_params=num_params, clients=num_clients)
  if spec.secagg.enabled:
    secagg_params = secagg.choose_parameters(spec.clients_per_round, **build.key_agreement_kwargs(spec))
    summary["secagg_parameters"] = secagg_params.as_dict()
    summary["aborted_rounds"] = sum("aborted" in row for row in history)
    summary["nonfinite_dropouts"] = sum(len(row.get("secagg_nonfinite", ())) for row in history)
  summary_lib.print_summary(summary, history)
  if spec.secagg.enabled:
    print(f"{secagg_params.describe()}\naborted rounds: {summary['aborted_rounds']}, "
          f"clients left out for non-finite updates: {summary['nonfinite_dropouts']}")
  (out / "summary.json").write_text(json.dumps(summary, indent=2))
  return summary
