"""SecAgg / SecAgg+ round state on the host: drop-outs, key advertisement, peer messaging.

``setup_round`` runs round 0 of Bonawitz et al. (AdvertiseKeys): every client draws two X25519
key pairs (``c`` for encryption, ``s`` for masking) and the server forwards the public keys to
each client's neighbours in the communication graph (complete for SecAgg; for SecAgg+, Bell et
al., a randomly labelled k-regular Harary graph whose k and Shamir threshold t come from
:mod:`clipjax.secagg.params`).
The returned :class:`RoundSetup` holds the simulated clients' private state and a
:class:`ServerTranscript`, which holds only what a real server receives. Signatures and the
consistency check of the actively secure variant are not simulated (honest-but-curious model).

Key material is drawn from the OS on every call; ``seed`` drives only public or simulated
choices (the simulated clients' graph nonces, the drop-outs), so two rounds never share masks even
with the same seed. The SecAgg+ graph comes from the nonces every advertised client commits in
AdvertiseKeys (``graph_randomness="committed"``, :func:`clipjax.secagg.graph.committed_seed`):
it is fixed only once the round's participants have committed.

``simulate`` (:data:`SIMULATE_MODES`) says how the round's secure sum is simulated: ``protocol``
runs every stage with real keys; ``sum`` (:mod:`clipjax.secagg.fast_sum`) computes the same
result from the public choices alone, so its setup draws no keys up front (the graph nonces
are public choices, not keys) (a caller that still
asks for a pairwise key gets the pair drawn on first use; CLIP's time broadcast asks for none);
``verify`` runs the protocol and checks ``sum`` against it bit for bit.

References:
  K. Bonawitz et al. Practical Secure Aggregation for Privacy-Preserving Machine Learning.
  CCS 2017.
  J. Bell, K. Bonawitz, A. Gascon, T. Lepoint, M. Raykova. Secure Single-Server Aggregation with
  (Poly)Logarithmic Overhead. CCS 2020.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

import numpy as np

from clipjax.secagg import checks, graph, host_crypto
from clipjax.secagg import params as params_lib

STAGES = ("advertise_keys", "share_keys", "masked_input", "unmasking")
SIMULATE = ("protocol", "sum")            # the choices of the config's secagg.simulate
SIMULATE_MODES = (*SIMULATE, "verify")    # verify: the protocol, checked against sum
PUBLIC_KEY_MESSAGE_BYTES = 2 * host_crypto.KEY_BYTES + 4


class RoundAborted(RuntimeError):
  """Too few clients survived a stage: the round must be discarded (no model change).

  Attributes:
    stage: the stage that failed (one of :data:`STAGES`).
    participants: sorted ids of the clients that were still taking part when it failed (they did
      that stage's work; the virtual clock charges them for it).
    nonfinite, too_few_holders: clients already left out for a non-finite update or for lack of
      share holders before the round failed (as in :class:`SecureSumResult`).
  """

  def __init__(self, message: str, stage: str, participants: Sequence[int] = (),
               nonfinite: Sequence[int] = (), too_few_holders: Sequence[int] = ()):
    super().__init__(message)
    self.stage = stage
    self.participants = tuple(sorted(int(u) for u in participants))
    self.nonfinite = tuple(nonfinite)
    self.too_few_holders = tuple(too_few_holders)


def check_seed(seed) -> int | None:
  if seed is not None and (not checks.is_integer(seed) or seed < 0):
    raise ValueError(f"seed={seed!r} must be a non-negative integer or None (OS randomness)")
  return None if seed is None else int(seed)


def check_simulate(simulate) -> str:
  if not isinstance(simulate, str) or simulate not in SIMULATE_MODES:
    raise ValueError(f"simulate={simulate!r} is unknown; allowed: {SIMULATE_MODES}")
  return simulate


def check_round_index(round_index) -> int:
  if not checks.is_integer(round_index) or not 0 <= round_index < 2 ** 64:
    raise ValueError(f"round_index={round_index!r} must be an integer in [0, 2^64) (it is bound "
                     "into every AES-GCM associated data as an unsigned 64-bit number)")
  return int(round_index)


def _client_id(stage: str, value, num_clients: int) -> int:
  if not checks.is_integer(value):
    raise ValueError(f"dropouts.{stage} has client id {value!r}: ids must be integers in "
                     f"[0, {num_clients})")
  if not 0 <= value < num_clients:
    raise ValueError(f"dropouts.{stage} has client id {value} outside [0, {num_clients})")
  return int(value)


@dataclasses.dataclass(frozen=True)
class Dropouts:
  """Which clients drop out, and when.

  Attributes:
    advertise_keys, share_keys, masked_input, unmasking: client ids that drop *before sending*
      their message of that stage (and never come back in this round).
    rate: additionally, each client drops with this probability, at a stage drawn uniformly
      among the four (so ``rate`` is the expected fraction of clients lost in the round).
  """
  advertise_keys: Sequence[int] = ()
  share_keys: Sequence[int] = ()
  masked_input: Sequence[int] = ()
  unmasking: Sequence[int] = ()
  rate: float = 0.0

  def resolve(self, num_clients: int, seed: int | None) -> dict[str, frozenset[int]]:
    """Per-stage sets of clients that drop at that stage (validated).

    Raises:
      ValueError: on a rate outside [0, 1), a client id that is not an integer in [0, n), or a
        bad ``num_clients`` or ``seed``.
    """
    if not checks.is_integer(num_clients) or num_clients < 1:
      raise ValueError(f"num_clients={num_clients!r} must be an integer >= 1")
    num_clients, seed = int(num_clients), check_seed(seed)
    if not checks.is_real(self.rate) or not 0.0 <= self.rate < 1.0:
      raise ValueError(f"dropout rate={self.rate!r} must be a number in [0, 1)")
    out = {}
    for stage in STAGES:
      ids = getattr(self, stage)
      if (isinstance(ids, (str, bytes)) or not isinstance(ids, (Sequence, np.ndarray, set,
                                                                  frozenset))
          or getattr(ids, "ndim", 1) != 1):
        raise ValueError(f"dropouts.{stage}={ids!r} must be a sequence of client ids, e.g. "
                         "[0, 3]")
      out[stage] = frozenset(_client_id(stage, i, num_clients) for i in ids)
    if self.rate > 0:
      rng = np.random.default_rng(None if seed is None else np.random.SeedSequence([seed, 7]))
      drops = rng.random(num_clients) < self.rate
      stage_of = rng.integers(len(STAGES), size=num_clients)
      for i in np.flatnonzero(drops):
        out[STAGES[stage_of[i]]] |= {int(i)}
    return out


@dataclasses.dataclass
class ServerTranscript:
  """Everything the server receives in one round, and nothing else.

  Attributes:
    public_keys: client -> (encryption public key, masking public key).
    graph_nonces: client -> the 16-byte nonce it committed with its keys, from which the
      round's SecAgg+ graph is derived (empty when the graph needs none).
    share_ciphertexts: (sender, receiver) -> AES-GCM ciphertext of the sender's shares.
    relayed: list of (sender, receiver, ciphertext) peer messages relayed by the server.
    masked_ids: ids of the clients whose masked input arrived.
    masked_inputs: uint32 ``[len(masked_ids), D + 1]`` masked inputs (numpy, host copy), or None
      when the caller asked not to keep them.
    revealed_shares: (holder, owner, kind) -> Shamir share revealed in the unmasking round,
      kind in {"self_seed", "mask_key"}.
  """
  public_keys: dict[int, tuple[bytes, bytes]] = dataclasses.field(default_factory=dict)
  graph_nonces: dict[int, bytes] = dataclasses.field(default_factory=dict)
  share_ciphertexts: dict[tuple[int, int], bytes] = dataclasses.field(default_factory=dict)
  relayed: list[tuple[int, int, bytes]] = dataclasses.field(default_factory=list)
  masked_ids: tuple[int, ...] = ()
  masked_inputs: np.ndarray | None = None
  revealed_shares: dict[tuple[int, int, str], bytes] = dataclasses.field(default_factory=dict)


class RoundSetup:
  """Keys and graph of one round (after AdvertiseKeys). Host object; never enters jit.

  Attributes:
    num_clients, protocol, degree, threshold, round_index, seed: round parameters.
    params: the :class:`clipjax.secagg.params.SecAggParameters` (k, t and failure bounds).
    edges: int32 ``[E, 2]`` graph edges (lo < hi).
    advertised: sorted ids of clients that sent their public keys (U1).
    dropout_spec: the :class:`Dropouts` given to ``setup_round``.
    dropouts: resolved per-stage drop-out sets.
    server: the :class:`ServerTranscript`.
    seconds: host seconds spent in AdvertiseKeys.
    graph_randomness: one of :data:`clipjax.secagg.graph.GRAPH_RANDOMNESS`; the nonces that
      made a ``committed`` SecAgg+ graph are in ``server.graph_nonces``.
    simulate: one of :data:`SIMULATE_MODES`. Under ``sum`` no key is drawn here: a client's
      two key pairs are drawn the first time one of its keys is needed (and its public keys
      then enter ``server.public_keys``).
  """

  def __init__(self, params, round_index, seed, dropout_spec, dropouts,
               simulate: str = "protocol", graph_randomness: str = "committed",
               graph_made: tuple[np.ndarray, dict[int, bytes]] | None = None):
    self.params = params
    self.num_clients = num_clients = params.num_clients
    self.protocol = params.protocol
    self.degree = params.degree
    self.threshold = threshold = params.threshold
    self.round_index = round_index
    self.seed = seed
    self.dropout_spec = dropout_spec
    self.dropouts = dropouts
    self.simulate = simulate
    self.graph_randomness = graph_randomness
    self.rng = host_crypto.Randomness()
    self.server = ServerTranscript()
    self.used = False
    self._enc_private: dict[int, bytes] = {}
    self._mask_private: dict[int, bytes] = {}
    self._peer_keys: dict[tuple[int, int], bytes] = {}
    start = time.perf_counter()
    self.advertised = tuple(u for u in range(num_clients)
                            if u not in dropouts["advertise_keys"])
    self._advertised_set = frozenset(self.advertised)
    self.edges, self.server.graph_nonces = (self._round_graph() if graph_made is None
                                            else (graph_made[0], dict(graph_made[1])))
    self._graph_nbrs = graph.neighbour_lists(num_clients, self.edges)
    if simulate != "sum":
      for u in self.advertised:
        self._draw_keys(u)
    self.seconds = time.perf_counter() - start
    if len(self.advertised) < threshold:
      raise RoundAborted(
          f"round {round_index} aborted at advertise_keys: {len(self.advertised)} clients "
          f"advertised keys, fewer than threshold t={threshold}", "advertise_keys",
          self.advertised)

  def _round_graph(self) -> tuple[np.ndarray, dict[int, bytes]]:
    """(edges, the advertised clients' graph nonces) of this round's communication graph."""
    n, k = self.num_clients, self.degree
    if self.protocol == "secagg":
      return graph.complete_graph(n), {}
    if self.graph_randomness == "seed":
      return graph.random_harary_graph(n, k, self.seed), {}
    nonces = {u: (self.rng.bytes(graph.GRAPH_NONCE_BYTES) if self.seed is None
                  else graph.simulated_nonce(self.seed, self.round_index, u))
              for u in self.advertised}
    seed = graph.committed_seed(self.round_index, n, k, nonces)
    return graph.random_harary_graph(n, k, seed), nonces

  @property
  def advertise_bytes(self) -> tuple[int, int]:
    """(bytes a client sends, bytes it receives per neighbour) in AdvertiseKeys; a client also
    receives every advertised client's graph nonce (``server.graph_nonces``), so that it can
    recompute the graph."""
    nonce = graph.GRAPH_NONCE_BYTES if self.server.graph_nonces else 0
    return PUBLIC_KEY_MESSAGE_BYTES + nonce, PUBLIC_KEY_MESSAGE_BYTES

  def _draw_keys(self, u: int) -> None:
    c_priv, c_pub = host_crypto.x25519_keypair(self.rng)
    s_priv, s_pub = host_crypto.x25519_keypair(self.rng)
    self._enc_private[u], self._mask_private[u] = c_priv, s_priv
    self.server.public_keys[u] = (c_pub, s_pub)

  def _keys_of(self, u: int) -> int:
    """``u`` (an advertised client), its key pairs drawn if ``sum`` has not drawn them yet."""
    if u not in self.server.public_keys:
      self._draw_keys(u)
    return u

  def sum_twin(self) -> RoundSetup:
    """A ``sum`` setup of the same round: same parameters, graph and drop-outs, no keys."""
    return RoundSetup(self.params, self.round_index, self.seed, self.dropout_spec, self.dropouts,
                      simulate="sum", graph_randomness=self.graph_randomness,
                      graph_made=(self.edges, self.server.graph_nonces))

  def neighbours(self, u: int) -> tuple[int, ...]:
    """Graph neighbours of ``u`` that advertised keys (whose public keys u received)."""
    u = self._check_client(u)
    if u not in self._advertised_set:
      return ()
    return tuple(v for v in self._graph_nbrs[u] if v in self._advertised_set)

  def graph_neighbours(self, u: int) -> tuple[int, ...]:
    """Neighbours of ``u`` in the round's communication graph (advertised keys or not)."""
    return self._graph_nbrs[self._check_client(u)]

  def _check_client(self, u: int) -> int:
    if not checks.is_integer(u):
      raise ValueError(f"client id {u!r} must be an integer in [0, {self.num_clients})")
    if not 0 <= u < self.num_clients:
      raise ValueError(f"client id {u} outside [0, {self.num_clients})")
    return int(u)

  def _check_advertised(self, u: int) -> int:
    u = self._check_client(u)
    if u not in self._advertised_set:
      raise ValueError(f"client {u} dropped out before advertise_keys: it has no keys this "
                       f"round (clients with keys: setup.advertised)")
    return u

  def _pair(self, u: int, v: int, info: bytes, private: dict[int, bytes], which: int) -> bytes:
    # X25519 is commutative, so u and v derive the same key: computed once per unordered pair.
    key = (min(u, v), max(u, v), info)
    if key not in self._peer_keys:
      self._keys_of(u)
      self._keys_of(v)
      self._peer_keys[key] = host_crypto.agree(private[u], self.server.public_keys[v][which], info)
    return self._peer_keys[key]

  def peer_key(self, u: int, v: int, info: bytes = host_crypto.INFO_PEER) -> bytes:
    """The 32-byte AES key u and v share (HKDF-SHA256 of their encryption-key agreement).

    Raises:
      ValueError: if u and v are not neighbours that both advertised keys.
    """
    u, v = self._check_client(u), self._check_client(v)
    if u == v or v not in self.neighbours(u):
      raise ValueError(f"clients {u} and {v} are not neighbours in this round's "
                       f"{self.protocol} graph (or one of them did not advertise keys)")
    return self._pair(u, v, info, self._enc_private, 0)

  def mask_seed(self, u: int, v: int) -> bytes:
    """Pairwise masking seed s_uv (client-side agreement of the masking keys).

    Raises:
      ValueError: unless u and v are distinct client ids that both advertised keys.
    """
    u, v = self._check_advertised(u), self._check_advertised(v)
    if u == v:
      raise ValueError(f"mask_seed({u}, {v}): a pairwise seed needs two different clients")
    return self._pair(u, v, host_crypto.INFO_MASK, self._mask_private, 1)

  def mask_private(self, u: int) -> bytes:
    """Client u's private masking key (ValueError unless u advertised keys)."""
    return self._mask_private[self._keys_of(self._check_advertised(u))]


def setup_round(num_clients: int, *, protocol: str = "secagg+", degree: int | None = None,
                threshold: int | None = None, seed: int | None = None, round_index: int = 0,
                dropouts: Dropouts | None = None,
                threat: params_lib.ThreatModel | None = None,
                allow_weak: bool = False, simulate: str = "protocol",
                graph_randomness: str = "committed") -> RoundSetup:
  """AdvertiseKeys: fresh key pairs for every client and the communication graph of one round.

  Args:
    num_clients: n, at least 2.
    protocol: "secagg" (complete graph) or "secagg+" (randomly labelled Harary graph).
    degree: k for SecAgg+ (default: chosen by :func:`clipjax.secagg.params.choose_parameters`);
      SecAgg always has k = n - 1.
    threshold: Shamir threshold t (default: chosen by the same analysis).
    seed: seed of the public and simulated choices only (the simulated clients' graph nonces,
      drop-outs); None draws them from the OS too, as a deployment does. Keys always come from
      the OS.
    round_index: non-negative round number bound into every AES-GCM associated data.
    dropouts: drop-out spec; only its advertise_keys part acts here.
    threat: the :class:`clipjax.secagg.params.ThreatModel` the parameters must meet.
    allow_weak: accept an explicit (degree, threshold) that misses the security target.
    simulate: how the round's secure sum is simulated (see the module docstring): "protocol"
      (default), "sum" (no keys are drawn here) or "verify".
    graph_randomness: where the SecAgg+ graph's labels come from
      (:data:`clipjax.secagg.graph.GRAPH_RANDOMNESS`): "committed" (default), the hash of the
      nonces the advertised clients commit; "seed", the seed alone (runs stored before it).

  Returns:
    A :class:`RoundSetup`; ``setup.params`` holds (k, t) and their failure bounds.

  Raises:
    ValueError: on an unknown protocol or simulate mode, impossible n, k, t, a weak (k, t)
      without ``allow_weak``, a bad seed, round index, threat or drop-out spec.
    RoundAborted: if fewer than t clients advertise keys.
  """
  graph.check_protocol(protocol)
  simulate = check_simulate(simulate)
  seed = check_seed(seed)
  round_index = check_round_index(round_index)
  graph_randomness = graph.check_graph_randomness(graph_randomness)
  if dropouts is not None and not isinstance(dropouts, Dropouts):
    raise ValueError(f"dropouts={dropouts!r} must be a clipjax.secagg.Dropouts or None, e.g. "
                     "Dropouts(masked_input=[1], rate=0.1)")
  params = params_lib.choose_parameters(num_clients, protocol=protocol, degree=degree,
                                        threshold=threshold, threat=threat,
                                        allow_weak=allow_weak)
  spec = Dropouts() if dropouts is None else dropouts
  resolved = spec.resolve(params.num_clients, seed)
  return RoundSetup(params, round_index, seed, spec, resolved, simulate, graph_randomness)


def _check_setup(setup) -> None:
  if not isinstance(setup, RoundSetup):
    raise ValueError(f"setup={setup!r} must be a RoundSetup from setup_round")


def seal_for_peer(setup: RoundSetup, u: int, v: int, plaintext: bytes) -> bytes:
  """Client u encrypts ``plaintext`` for neighbour v (AES-256-GCM; AD binds u, v, round).

  The server relays the returned bytes; it is recorded in ``setup.server.relayed``.

  Raises:
    ValueError: for a setup that is not a :class:`RoundSetup`, u and v that are not neighbours
      with keys, or a plaintext that is not bytes.
  """
  _check_setup(setup)
  if not isinstance(plaintext, (bytes, bytearray, memoryview)):
    raise ValueError(f"plaintext must be bytes, got {type(plaintext).__name__}; encode text "
                     "first (e.g. text.encode())")
  u, v = setup._check_client(u), setup._check_client(v)
  key = setup.peer_key(u, v)
  aad = host_crypto.associated_data(u, v, setup.round_index, host_crypto.INFO_PEER)
  sealed = host_crypto.seal(key, plaintext, aad, setup.rng)
  setup.server.relayed.append((u, v, sealed))
  return sealed


def open_from_peer(setup: RoundSetup, v: int, u: int, ciphertext: bytes) -> bytes:
  """Client v decrypts a message that claims to come from u.

  Raises:
    ValueError: if the ciphertext was tampered with, was not sealed by u for v this round, or
      is not bytes; for a setup that is not a :class:`RoundSetup`.
  """
  _check_setup(setup)
  if not isinstance(ciphertext, (bytes, bytearray, memoryview)):
    raise ValueError(f"ciphertext must be the bytes seal_for_peer returned, got "
                     f"{type(ciphertext).__name__}")
  u, v = setup._check_client(u), setup._check_client(v)
  key = setup.peer_key(v, u)
  aad = host_crypto.associated_data(u, v, setup.round_index, host_crypto.INFO_PEER)
  try:
    return host_crypto.open_sealed(key, ciphertext, aad)
  except ValueError as err:
    raise ValueError(f"message from client {u} to client {v} (round {setup.round_index}) "
                     f"failed authentication: {err}") from err
