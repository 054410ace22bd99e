"""Type checks shared by the SecAgg entry points: which numbers count as integers and fractions.

NumPy scalars (``np.int64(10)``, ``np.float32(0.1)``) are numbers like Python's and are
accepted wherever those are; ``bool`` (a Python int) and ``np.bool_`` never are. Values are
normalised to Python ``int`` / ``float``, so results, equality and JSON reports do not depend on
which kind of number the caller passed. Each entry point words its own error message, naming the
argument, the bad value and what is allowed.
"""

from __future__ import annotations

import numbers

import numpy as np


def is_integer(value) -> bool:
  """Whether ``value`` is an integral number (NumPy integer scalars included, bools not)."""
  return not isinstance(value, (bool, np.bool_)) and isinstance(value, numbers.Integral)


def is_real(value) -> bool:
  """Whether ``value`` is a real number (NumPy scalars included, bools not); NaN counts."""
  return not isinstance(value, (bool, np.bool_)) and isinstance(value, numbers.Real)


def as_float(value: numbers.Real) -> float:
  """A real number as a Python float, reading a NumPy float as the decimal it was written as.

  ``float(np.float32(0.1))`` is 0.10000000149..., so a fraction of a client count could floor
  differently from 0.1's; the shortest decimal that round-trips in the value's own precision
  (NumPy's ``str``) is what the caller wrote, and converts to the same float as the literal.
  """
  if isinstance(value, np.floating):
    return float(str(value))
  return float(value)


def client_id(name: str, value, num_clients: int) -> int:
  """``value`` as an int client id in ``[0, num_clients)``, or ValueError naming ``name``."""
  if not is_integer(value):
    raise ValueError(f"{name}={value!r} must be an integer client id in [0, {num_clients})")
  if not 0 <= value < num_clients:
    raise ValueError(f"{name}={value} is outside [0, {num_clients}): client ids are 0 .. "
                     f"num_clients - 1")
  return int(value)
