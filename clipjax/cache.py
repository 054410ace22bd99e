"""The one folder clipjax writes derived files to: prepared data records, device
measurements, JAX's compilation cache (never raw data or results).

``$CLIPJAX_CACHE``, default ``~/.cache/clipjax``.
"""

from __future__ import annotations

import os
import pathlib

CACHE_ENV = "CLIPJAX_CACHE"


def cache_dir() -> pathlib.Path:
  """``$CLIPJAX_CACHE``, default ``~/.cache/clipjax``: derived files, never raw data."""
  return pathlib.Path(os.environ.get(CACHE_ENV) or pathlib.Path.home() / ".cache" / "clipjax"
                      ).expanduser()
