"""Test-wide settings: strict dtype promotion (uint32 field arithmetic must never promote), and
one persistent XLA compilation cache for the session.

Many tests build the same programs afresh (a new round, a new trainer, a subprocess running
scripts/train.py); the cache, a fresh folder per session shared with the subprocesses through
the environment, compiles each program once. It changes no result: the cache is keyed by the
program and the devices.
"""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=1")
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _cache = tempfile.mkdtemp(prefix="clipjax-test-xla-cache-")
  atexit.register(shutil.rmtree, _cache, ignore_errors=True)
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import jax  # noqa: E402

jax.config.update("jax_numpy_dtype_promotion", "strict")
