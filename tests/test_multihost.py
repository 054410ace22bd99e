"""`Processes.scatter` hands each process only its own part (SecAgg key material)."""

import threading

from clipjax import multihost


class _Store:
  """The key-value store of `jax.distributed`, in memory, for processes run as threads."""

  def __init__(self, count):
    self.values, self.reads, self._cv = {}, [], threading.Condition()
    self._barrier = threading.Barrier(count)

  def key_value_set_bytes(self, key, value):
    with self._cv:
      self.values[key] = value
      self._cv.notify_all()

  def blocking_key_value_get_bytes(self, key, timeout_ms):
    with self._cv:
      assert self._cv.wait_for(lambda: key in self.values, timeout_ms / 1000)
      self.reads.append((threading.current_thread().name, key))
      return self.values[key]

  def wait_at_barrier(self, name, timeout_ms):
    self._barrier.wait(timeout_ms / 1000)

  def key_value_delete(self, key):
    with self._cv:
      del self.values[key]


def test_each_process_receives_its_own_part_and_reads_no_other(monkeypatch):
  store = _Store(3)
  monkeypatch.setattr(multihost.Processes, "_client", lambda self: store)
  procs = [multihost.Processes(i, 3) for i in range(3)]
  parts = {0: "lead's own", 1: {"keys": b"for one"}, 2: [b"for two"]}
  got = {}

  def run(p):
    got[p.index] = p.scatter(parts if p.is_lead else None)

  threads = [threading.Thread(target=run, args=(p,), name=f"p{p.index}") for p in procs]
  for t in threads:
    t.start()
  for t in threads:
    t.join(10)
  assert got == parts
  assert sorted(store.reads) == [("p1", "clipjax/0/to/1"), ("p2", "clipjax/0/to/2")]
  assert store.values == {}  # nothing left behind


def test_one_process_scatters_to_itself():
  assert multihost.SINGLE.scatter({0: 5, 1: 6}) == 5
  assert multihost.SINGLE.scatter(None) is None
