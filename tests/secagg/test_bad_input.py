"""Issue 21: bad input to the SecAgg entry points is one clear ValueError, never a traceback from
deep inside; NumPy scalars are numbers like Python's and give the same result.

Each case names, in a comment, what the code before the fix did with it.
"""

import json

import jax
import numpy as np
import pytest

from clipjax import secagg
from clipjax.secagg import aggregate, graph, host_crypto, params, quantize, shamir

N = 6
X = np.linspace(-0.9, 0.9, N * 4, dtype=np.float32).reshape(N, 4)


@pytest.fixture(scope="module")
def setup():
  return secagg.setup_round(N, seed=0)


# Wrong kinds of object where a ThreatModel, Dropouts, ChunkKeys or RoundSetup belongs: each
# was an AttributeError ('str' object has no attribute 'counts' / 'resolve' / 'ids' /
# 'peer_key') from inside the function.
@pytest.mark.parametrize("call,match", [
    (lambda: secagg.choose_parameters(10, threat=0.2),
     r"threat=0.2 must be a clipjax.secagg.ThreatModel or None"),
    (lambda: secagg.choose_parameters(10, threat={"corruption_fraction": 0.1}),
     r"threat=\{'corruption_fraction': 0.1\} must be a clipjax.secagg.ThreatModel"),
    (lambda: secagg.failure_bounds(10, 4, 3, "x"), r"threat='x' must be a clipjax.secagg.Threat"),
    (lambda: secagg.setup_round(10, threat=[0.1]), r"threat=\[0.1\] must be a clipjax.secagg"),
    (lambda: secagg.secure_sum(X, threat=0.2), r"threat=0.2 must be a clipjax.secagg.ThreatModel"),
    (lambda: secagg.setup_round(10, dropouts=[1]),
     r"dropouts=\[1\] must be a clipjax.secagg.Dropouts or None"),
    (lambda: secagg.secure_sum(X, dropouts={"share_keys": [1]}),
     r"dropouts=\{'share_keys': \[1\]\} must be a clipjax.secagg.Dropouts"),
    (lambda: secagg.masked_partial(None, X[:2], clip=1.0, bits=16),
     r"keys must be the ChunkKeys of SecureSumStream.client_keys\(ids\), got NoneType"),
    (lambda: secagg.masked_partial({"ids": [0]}, X[:1], clip=1.0, bits=16),
     r"keys must be the ChunkKeys .* got dict"),
    (lambda: secagg.seal_for_peer(None, 0, 1, b"x"),
     r"setup=None must be a RoundSetup from setup_round"),
    (lambda: secagg.open_from_peer("x", 1, 0, b"x" * 40),
     r"setup='x' must be a RoundSetup from setup_round"),
])
def test_wrong_objects_are_named(call, match):
  with pytest.raises(ValueError, match=match):
    call()


# secure_sum_tree leaves that are not [C, ...] arrays: a 0-d array was IndexError (tuple index
# out of range), a float, int or str leaf AttributeError (no attribute 'shape').
@pytest.mark.parametrize("tree,got", [
    ({"a": np.array(0.5)}, "ndarray"), ({"a": 1.0}, "float"), ({"a": [1, 2]}, "int"),
    ({"a": "x"}, "str"), ({"w": np.zeros((N, 2), np.float32), "b": 0.0}, "float"),
])
def test_tree_leaves_must_have_a_client_axis(tree, got):
  with pytest.raises(ValueError, match=f"every leaf must be an array with a leading client axis "
                                       rf"\[C, ...\]; got {got}"):
    secagg.secure_sum_tree(tree, seed=0)


# Client ids of a RoundSetup: graph_neighbours(10) was IndexError, mask_seed(0, 10) and
# mask_private(10) KeyError, a float id in seal_for_peer / open_from_peer struct.error
# ("required argument is not an integer"), None in neighbours a TypeError comparing int and
# NoneType.
@pytest.mark.parametrize("call,match", [
    (lambda s: s.graph_neighbours(10), r"client id 10 outside \[0, 6\)"),
    (lambda s: s.graph_neighbours(-1), r"client id -1 outside \[0, 6\)"),  # was a silent s[-1]
    (lambda s: s.mask_seed(s.advertised[0], 10), r"client id 10 outside \[0, 6\)"),
    (lambda s: s.mask_private(10), r"client id 10 outside \[0, 6\)"),
    (lambda s: s.neighbours(None), r"client id None must be an integer in \[0, 6\)"),
    (lambda s: secagg.seal_for_peer(s, 0, 1.0 * s.neighbours(0)[0], b"x"),
     r"client id \d.0 must be an integer in \[0, 6\)"),
    (lambda s: secagg.open_from_peer(s, s.neighbours(0)[0], 0.0, b"x" * 40),
     r"client id 0.0 must be an integer in \[0, 6\)"),
    (lambda s: secagg.seal_for_peer(s, 0, s.neighbours(0)[0], "text"),
     r"plaintext must be bytes, got str; encode text first"),
    (lambda s: secagg.open_from_peer(s, s.neighbours(0)[0], 0, None),
     r"ciphertext must be the bytes seal_for_peer returned, got NoneType"),
])
def test_client_ids_and_messages_of_a_setup(setup, call, match):
  with pytest.raises(ValueError, match=match):
    call(setup)


def test_a_client_without_keys_has_no_mask_key():
  s = secagg.setup_round(N, seed=0, dropouts=secagg.Dropouts(advertise_keys=[2]))
  with pytest.raises(ValueError, match="client 2 dropped out before advertise_keys"):  # KeyError
    s.mask_private(2)


@pytest.mark.parametrize("spec,args,match", [
    # IndexError (invalid index to scalar variable) from rng.random(None).
    (secagg.Dropouts(rate=0.5), (None, 0), r"num_clients=None must be an integer >= 1"),
    (secagg.Dropouts(rate=0.5), (6, 1.5), r"seed=1.5 must be a non-negative integer"),
    # TypeError: iteration over a 0-d array.
    (secagg.Dropouts(share_keys=np.array(1)), (6, 0),
     r"dropouts.share_keys=array\(1\) must be a sequence of client ids"),
])
def test_dropout_specs(spec, args, match):
  with pytest.raises(ValueError, match=match):
    spec.resolve(*args)


# Graph helpers: a bad edge id was IndexError, edges given as None or a list AttributeError
# ('list' object has no attribute 'tolist'), num_clients=10.0 numpy's AxisError.
def test_graph_inputs():
  with pytest.raises(ValueError, match=r"edges \[\[0, 5\]\] have client ids outside \[0, 3\)"):
    graph.neighbour_lists(3, np.array([[0, 5]]))
  with pytest.raises(ValueError, match=r"edges must be an integer \[E, 2\] array .* NoneType"):
    graph.neighbour_lists(3, None)
  with pytest.raises(ValueError, match=r"edges must be an integer \[E, 2\] array .* float64"):
    graph.neighbour_lists(3, np.array([[0.0, 1.5]]))
  assert graph.neighbour_lists(3, [[0, 1]]) == [(1,), (0,), ()]  # a list of pairs is fine
  with pytest.raises(ValueError, match=r"num_clients=10.0 must be an integer >= 2"):
    graph.random_harary_graph(10.0, 4, 0)
  with pytest.raises(ValueError, match=r"degree=None must be an integer in \[1, 9\]"):
    graph.random_harary_graph(10, None, 0)
  with pytest.raises(ValueError, match=r"seed=1.5 must be a non-negative integer or None"):
    graph.random_harary_graph(10, 4, 1.5)
  with pytest.raises(ValueError, match=r"num_clients='5' must be an integer >= 1"):
    graph.complete_graph("5")
  with pytest.raises(ValueError, match=r"num_clients=None must be an integer >= 2"):
    graph.heuristic_degree_2log2n(None)


# bits: 0 was a ZeroDivisionError in weight_codes and quantize.decode; None, '16' or 16.0 a
# TypeError (unsupported operand type(s) for <<); 40 or 64 silently made codes past uint32.
@pytest.mark.parametrize("bits", [0, -1, None, "16", 16.0, 40])
def test_bits_are_checked_where_codes_are_made(bits):
  match = rf"bits={bits!r} must be an integer in \[1, 24\]"
  with pytest.raises(ValueError, match=match):
    secagg.weight_codes(np.ones(N), N, bits, 2.0)
  with pytest.raises(ValueError, match=match):
    secagg.weight_codes(None, N, bits, None)
  with pytest.raises(ValueError, match=match):
    quantize.decode(np.zeros(3, np.uint32), 2, 1.0, bits)
  with pytest.raises(ValueError, match=match):
    quantize.encode_weight(np.ones(3), bits)


# Client counts: check_bits(nan, 16) and max_safe_bits(0) or (True) passed; None and '6' were
# TypeErrors from arithmetic; weight_codes(w, None, ...) said "expected (None,)".
@pytest.mark.parametrize("n", [0, -1, None, "6", 6.0, float("nan"), True, np.array([6])])
def test_client_counts(n):
  with pytest.raises(ValueError, match=r"num_clients=.* must be an integer >= 1"):
    secagg.check_bits(n, 16)
  with pytest.raises(ValueError, match=r"num_clients=.* must be an integer >= 1"):
    secagg.max_safe_bits(n)
  with pytest.raises(ValueError, match=r"num_clients=.* must be an integer >= 1"):
    secagg.weight_codes(np.ones(6), n, 16, 2.0)


@pytest.mark.parametrize("weights,dtype", [
    (np.ones(N, complex), "complex128"),  # the imaginary part was dropped with a warning
    ({1: 2}, "object"),                   # TypeError: float() argument must be ... not 'dict'
    (["a"] * N, "<U1"),
])
def test_weights_must_be_real_numbers(weights, dtype):
  with pytest.raises(ValueError, match=f"weights must be real numbers, one per client .* dtype "
                                       f"{dtype}"):
    secagg.secure_sum(X, weights, max_weight=2.0, seed=0)


def test_failure_bounds_check_n_k_t():
  threat = params.ThreatModel()
  # Each returned numbers before: an impossible (k, t) got a "bound".
  with pytest.raises(ValueError, match=r"degree=40 must be in \[1, 9\] for num_clients=10"):
    secagg.failure_bounds(10, 40, 3, threat)
  with pytest.raises(ValueError, match=r"threshold=30 must be in \[1, 5\]"):
    secagg.failure_bounds(10, 4, 30, threat)
  with pytest.raises(ValueError, match=r"num_clients=0 must be an integer >= 2"):
    secagg.failure_bounds(0, 4, 3, threat)
  # TypeError: unsupported operand type(s) for -: 'NoneType' and 'int'.
  with pytest.raises(ValueError, match=r"degree=None: failure_bounds needs an explicit degree"):
    secagg.failure_bounds(10, None, 3, threat)


@pytest.mark.parametrize("allow_weak", ["yes", "no", 1])
def test_allow_weak_must_be_a_bool(allow_weak):
  # A truthy string silently opted into parameters that miss the security target.
  with pytest.raises(ValueError, match=rf"allow_weak={allow_weak!r} must be True or False"):
    secagg.choose_parameters(10, degree=4, threshold=3, allow_weak=allow_weak)
  with pytest.raises(ValueError, match=rf"allow_weak={allow_weak!r} must be True, False or None"):
    secagg.secure_sum(X, allow_weak=allow_weak)


@pytest.mark.parametrize("rng", [1, "x", np.zeros(3, np.uint32)])
def test_rng_must_be_a_key(rng):
  # TypeError from JAX: "JAX encountered invalid PRNG key data ...".
  with pytest.raises(ValueError, match=r"rng must be one JAX PRNG key, e.g. jax.random.key\(0\)"):
    secagg.secure_sum(X, seed=0, rng=rng)


def test_updates_need_two_clients():
  with pytest.raises(ValueError, match=r"updates has 1 rows; a secure sum needs at least 2"):
    secagg.secure_sum(X[:1], seed=0)


def test_scale_pair_checks_the_clip():
  for clip in (None, 0.0):  # gave NaN / inf scales
    with pytest.raises(ValueError, match=rf"clip={clip!r} must be a positive finite number"):
      quantize.scale_pair(np.ones(3, np.uint32), clip)


# Shamir: float holders were AttributeError ('float' object has no attribute 'to_bytes'), a list
# of shares AttributeError (no attribute 'items'); a holder id -1 got f(0), the secret itself;
# repeated holders or threshold 0 in combine passed silently.
def test_shamir_inputs():
  rng = host_crypto.Randomness()
  secret = rng.bytes(32)
  with pytest.raises(ValueError, match=r"holder id 0.5 must be a non-negative integer"):
    shamir.split(secret, 2, [0.5, 1.5], rng)
  with pytest.raises(ValueError, match=r"holder id -1 must be a non-negative integer"):
    shamir.split(secret, 2, [-1, 1, 2], rng)
  with pytest.raises(ValueError, match=r"holders \[0, 0, 1\] repeat an id"):
    shamir.split(secret, 3, [0, 0, 1], rng)
  with pytest.raises(ValueError, match=r"threshold='2' must be an integer >= 1"):
    shamir.split(secret, "2", [0, 1, 2], rng)
  with pytest.raises(ValueError, match=r"secret must be 32 bytes, got str"):
    shamir.split("x" * 32, 2, [0, 1, 2], rng)
  shares = shamir.split(secret, 2, [0, 1, 2], rng)
  with pytest.raises(ValueError, match=r"shares must be a mapping holder id -> share bytes"):
    shamir.combine(list(shares.values()), 2)
  with pytest.raises(ValueError, match=r"threshold=0 must be an integer >= 1"):
    shamir.combine(shares, 0)
  with pytest.raises(ValueError, match=r"share of holder 0 must be 66 bytes"):
    shamir.combine({0: "x", 1: shares[1]}, 2)


# NumPy scalars are numbers: each of these was rejected ("must be an integer") or, for Shamir,
# an OverflowError (Python int too large to convert to C long).
def test_numpy_integers_are_accepted_like_ints():
  threat = params.ThreatModel(np.float32(0.2), np.float64(0.1), np.int64(40), np.int32(20))
  assert threat == params.ThreatModel(0.2, 0.1, 40, 20)
  assert type(threat.security_bits) is int and type(threat.correctness_bits) is int
  got = secagg.choose_parameters(np.int64(50), threat=threat)
  assert got == secagg.choose_parameters(50)
  explicit = secagg.choose_parameters(np.int32(20), degree=np.int64(8), threshold=np.int64(5))
  assert explicit == secagg.choose_parameters(20, degree=8, threshold=5)
  assert type(explicit.degree) is int and type(explicit.num_clients) is int
  setup = secagg.setup_round(np.int64(10), degree=np.int64(4), threshold=np.uint8(3),
                             threat=params.ThreatModel(0.0), seed=np.int64(1))
  assert (setup.num_clients, setup.degree, setup.threshold) == (10, 4, 3)
  rng = host_crypto.Randomness()
  secret = rng.bytes(32)
  shares = shamir.split(secret, np.int64(2), np.array([0, 1, 2]), rng)
  assert shamir.combine({np.int64(h): s for h, s in shares.items()}, np.int64(2)) == secret
  assert secagg.failure_bounds(np.int64(20), np.int64(8), np.int64(5), threat) == \
      secagg.failure_bounds(20, 8, 5, params.ThreatModel())


def test_numpy_float_fractions_are_the_python_floats_they_stand_for():
  threat = params.ThreatModel(np.float32(0.1), np.float32(0.1))
  assert type(threat.corruption_fraction) is float and threat.corruption_fraction == 0.1
  assert threat.dropout_fraction == 0.1
  # The report is JSON (the metrics writer); np.float32 is not JSON serialisable.
  report = secagg.choose_parameters(10, threat=threat).as_dict()
  assert json.dumps(report) == json.dumps(
      secagg.choose_parameters(10, threat=params.ThreatModel(0.1, 0.1)).as_dict())
  assert params.ThreatModel(np.float16(0.3), 0.0).corruption_fraction == 0.3


def test_secure_sum_with_numpy_scalars_equals_python_numbers():
  k, t = 4, 3
  threat = params.ThreatModel(0.0, 0.2)
  py = secagg.secure_sum(X, degree=k, threshold=t, threat=threat, seed=3, bits=16, clip=0.5,
                         round_index=2, rng=jax.random.key(5))
  npy = secagg.secure_sum(
      X, degree=np.int64(k), threshold=np.int32(t),
      threat=params.ThreatModel(np.float32(0.0), np.float32(0.2)), seed=np.int64(3),
      bits=np.int64(16), clip=np.float32(0.5), round_index=np.uint16(2), rng=jax.random.key(5))
  np.testing.assert_array_equal(npy.encoded_sum, py.encoded_sum)
  np.testing.assert_array_equal(npy.total, py.total)
  assert npy.setup.params == py.setup.params
  assert aggregate.weight_codes(np.ones(N), np.int64(N), np.int64(8), np.float32(2.0))[0].tolist() \
      == aggregate.weight_codes(np.ones(N), N, 8, 2.0)[0].tolist()
