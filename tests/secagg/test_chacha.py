"""ChaCha20 (jax.numpy, and the host C path) against RFC 8439, pycryptodome and each other."""

import os

import hypothesis
import hypothesis.strategies as st
import jax
import numpy as np
import pytest
from Crypto.Cipher import ChaCha20

from clipjax.secagg import chacha

_keystream = jax.jit(chacha.keystream, static_argnames=("num_words", "tile", "layout", "impl"))


def _reference(key: bytes, nonce: bytes, first_block: int, num_words: int) -> np.ndarray:
  cipher = ChaCha20.new(key=key, nonce=nonce)
  cipher.seek(64 * first_block)
  return np.frombuffer(cipher.encrypt(bytes(4 * num_words)), "<u4")


@pytest.mark.parametrize("impl", chacha.IMPLS)
def test_rfc8439_block_vector(impl):
  # RFC 8439 section 2.3.2: key 00..1f, nonce 00:00:00:09:00:00:00:4a:00:00:00:00, counter 1.
  key = bytes(range(32))
  nonce = bytes.fromhex("000000090000004a00000000")
  expected = bytes.fromhex(
      "10f1e7e4d13b5915500fdd1fa32071c4c7d1f4c733c068030422aa9ac3d46c4e"
      "d2826446079faa0914c2d705d98b02a2b5129cd1de164eb9cbd083e8a2503c4e")
  out = _keystream(chacha.key_words(key)[None], chacha.nonce_words(nonce)[None], 1,
                   num_words=16, impl=impl)
  assert np.asarray(out)[0].astype("<u4").tobytes() == expected
  assert _reference(key, nonce, 1, 16).tobytes() == expected


@pytest.mark.parametrize("impl", chacha.IMPLS)
def test_rfc8439_encryption_vector(impl):
  # RFC 8439 section 2.4.2: the "sunscreen" plaintext, counter 1.
  key = bytes(range(32))
  nonce = bytes.fromhex("000000000000004a00000000")
  plain = (b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for "
           b"the future, sunscreen would be it.")
  out = np.asarray(_keystream(chacha.key_words(key)[None], chacha.nonce_words(nonce)[None], 1,
                              num_words=32, impl=impl))[0].astype("<u4").tobytes()
  cipher = bytes(a ^ b for a, b in zip(plain, out))
  assert cipher[:16].hex() == "6e2e359a2568f98041ba0728dd0d6981"
  assert cipher.hex().endswith("874d")


@hypothesis.settings(max_examples=8, deadline=None)
@hypothesis.given(num_streams=st.integers(1, 5), blocks=st.integers(1, 40),
                  first=st.integers(0, 2**32 - 41), tile=st.sampled_from([1, 7, 64, 4096]),
                  layout=st.sampled_from(["flat", "stream"]), seed=st.integers(0, 2**31))
def test_random_keys_match_pycryptodome(num_streams, blocks, first, tile, layout, seed):
  rng = np.random.default_rng(seed)
  keys = [rng.bytes(32) for _ in range(num_streams)]
  nonces = [rng.bytes(12) for _ in range(num_streams)]
  out = np.asarray(_keystream(np.stack([chacha.key_words(k) for k in keys]),
                              np.stack([chacha.nonce_words(n) for n in nonces]),
                              np.uint32(first), num_words=16 * blocks, tile=tile,
                              layout=layout, impl="xla"))
  for i in range(num_streams):
    np.testing.assert_array_equal(out[i], _reference(keys[i], nonces[i], first, 16 * blocks))


@pytest.mark.parametrize("impl,layout", [("xla", "flat"), ("xla", "stream"), ("host", None)])
def test_chunked_expansion_equals_whole_stream(impl, layout):
  key, nonce = os.urandom(32), os.urandom(12)
  kw, nw = chacha.key_words(key)[None], chacha.nonce_words(nonce)[None]
  whole = np.asarray(_keystream(kw, nw, 0, num_words=256, layout=layout, impl=impl))
  parts = [np.asarray(_keystream(kw, nw, np.uint32(j * 4), num_words=64, layout=layout,
                                 impl=impl)) for j in range(4)]
  np.testing.assert_array_equal(whole, np.concatenate(parts, axis=1))


@pytest.mark.parametrize("layout", ["flat", "stream"])
@pytest.mark.parametrize("tile", [None, 3, 64])
def test_layouts_match_pycryptodome_many_blocks(layout, tile):
  # Several streams, block counts not a multiple of the tile, counter near 2^32 wrap-free.
  rng = np.random.default_rng(7)
  keys = [rng.bytes(32) for _ in range(3)]
  nonces = [rng.bytes(12) for _ in range(3)]
  out = np.asarray(_keystream(np.stack([chacha.key_words(k) for k in keys]),
                              np.stack([chacha.nonce_words(n) for n in nonces]),
                              np.uint32(5), num_words=16 * 150, tile=tile, layout=layout,
                              impl="xla"))
  for i in range(3):
    np.testing.assert_array_equal(out[i], _reference(keys[i], nonces[i], 5, 16 * 150))


def test_unknown_layout_raises():
  with pytest.raises(ValueError, match="layout"):
    chacha.keystream(np.zeros((1, 8), np.uint32), np.zeros((1, 3), np.uint32), 0, 16,
                     layout="rows")


@pytest.mark.parametrize("impl", ["host", "xla"])
def test_unknown_impl_raises(impl, monkeypatch):
  with pytest.raises(ValueError, match="impl"):
    chacha.keystream(np.zeros((1, 8), np.uint32), np.zeros((1, 3), np.uint32), 0, 16,
                     impl=impl.upper())
  monkeypatch.setenv(chacha.IMPL_ENV, "fast")
  with pytest.raises(ValueError, match="CLIPJAX_CHACHA='fast'"):
    chacha.default_impl()
  monkeypatch.setenv(chacha.IMPL_ENV, impl)
  assert chacha.default_impl() == impl


def test_host_default_on_cpu(monkeypatch):
  monkeypatch.delenv(chacha.IMPL_ENV, raising=False)
  assert chacha.default_impl() == ("host" if jax.default_backend() == "cpu" else "xla")


def test_host_equals_xla_inside_a_jitted_loop():
  # The way blinding calls it: a traced first block inside fori_loop, many streams (so the
  # host path runs them on its thread pool), keys broadcast nonces.
  rng = np.random.default_rng(3)
  keys = rng.integers(0, 2**32, (9, 8), dtype=np.uint32)
  nonces = np.broadcast_to(rng.integers(0, 2**32, 3, dtype=np.uint32), (9, 3))

  def expand(impl):
    def body(j, out):
      ks = chacha.keystream(keys, nonces, (j * 3 + 2).astype(np.uint32), 48, impl=impl)
      return jax.lax.dynamic_update_slice_in_dim(out, ks, j * 48, axis=1)
    return jax.jit(lambda: jax.lax.fori_loop(0, 5, body, jax.numpy.zeros((9, 240), np.uint32)))()

  host, xla = np.asarray(expand("host")), np.asarray(expand("xla"))
  np.testing.assert_array_equal(host, xla)
  key = keys[4].astype("<u4").tobytes()
  np.testing.assert_array_equal(host[4], _reference(key, nonces[4].astype("<u4").tobytes(), 2,
                                                    240))
