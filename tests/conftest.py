"""Test-wide settings: strict dtype promotion (uint32 field arithmetic must never promote), and
one persistent XLA compilation cache for the session; the `script` fixture imports a file of
`scripts/` as a module.

Many tests build the same programs afresh (a new round, a new trainer, a subprocess running
scripts/train.py); the cache, a fresh folder per session shared with the subprocesses through
the environment, compiles each program once. It changes no result: the cache is keyed by the
program and the devices.
"""

import atexit
import importlib.util
import os
import pathlib
import shutil
import sys
import tempfile

import pytest

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=1")
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _cache = tempfile.mkdtemp(prefix="clipjax-test-xla-cache-")
  atexit.register(shutil.rmtree, _cache, ignore_errors=True)
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import jax  # noqa: E402

jax.config.update("jax_numpy_dtype_promotion", "strict")


_SCRIPTS = pathlib.Path(__file__).resolve().parents[1] / "scripts"


_LOADED_SCRIPTS: dict = {}


@pytest.fixture
def script():
  """`script(name)`: `scripts/<name>.py` imported as a module (its flags are not parsed), once
  per process: absl defines a script's flags once."""
  def load(name: str):
    if name not in _LOADED_SCRIPTS:
      spec = importlib.util.spec_from_file_location(name, _SCRIPTS / f"{name}.py")
      module = importlib.util.module_from_spec(spec)
      if str(_SCRIPTS) not in sys.path:
        sys.path.insert(0, str(_SCRIPTS))  # the scripts import their _cli sibling
      spec.loader.exec_module(module)
      _LOADED_SCRIPTS[name] = module
    return _LOADED_SCRIPTS[name]
  return load
