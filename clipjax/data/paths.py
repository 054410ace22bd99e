"""Where the raw data files and the prepared tfds records live (host side).

Raw data folder search order (the first folder holding the requested file wins):

1. ``$CLIPJAX_DATA`` when it is set: then it is the only folder searched (an empty value or one
   that is not a folder is an error, never a silent fallback to the others);
2. ``./data`` (relative to the current working directory);
3. ``../shared/data`` (relative to the current working directory);
4. ``data`` and ``../shared/data`` relative to the repository root (so scripts and tests work from
   any working directory of a checkout).

Prepared records (tensorflow-datasets ``array_record`` files) go to ``$CLIPJAX_TFDS_DIR`` when
set, else ``<cache>/tfds`` with ``<cache>`` = ``$CLIPJAX_CACHE`` (default ``~/.cache/clipjax``),
never into the raw data folder, which may be read-only or shared (DESIGN 3). They are prepared
once and reused by later calls.
"""

from __future__ import annotations

import os
import pathlib
from typing import Sequence

from clipjax.cache import cache_dir

DATA_ENV = "CLIPJAX_DATA"
TFDS_ENV = "CLIPJAX_TFDS_DIR"
_REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]

# What each dataset folder needs and how to obtain it; quoted in missing-file errors.
HOW_TO_GET = {
    "femnist": (
        "run `python scripts/download_data.py femnist` (LEAF's FEMNIST JSON, 296 MB, into "
        "./data/femnist/leaf_json), or put the packed 'femnist_leaf_300writers_uint8.npz' in "
        "<data>/femnist/, or pass data_dir=<a LEAF folder with train/*.json and test/*.json>"
    ),
    "shakespeare": (
        "run `python scripts/download_data.py shakespeare` (Project Gutenberg etext #100, the "
        "text LEAF builds on, 2 MB, into ./data/shakespeare/), or put it gzipped at "
        "<data>/shakespeare/shakespeare.txt.gz"
    ),
    "cifar10": (
        "run `python scripts/download_data.py cifar10` (the official binary archive, 170 MB, "
        "into ./data/cifar10/), or put cifar-10-binary.tar.gz or the image-folder zip "
        "cifar10_jpeg.zip in <data>/cifar10/"
    ),
}


def data_folders() -> list[pathlib.Path]:
  """Candidate raw data folders in search order (existing or not, duplicates removed)."""
  if DATA_ENV in os.environ:  # set: the one folder searched, never a silent fallback
    value = os.environ[DATA_ENV]
    if not value.strip():
      raise ValueError(f"${DATA_ENV} is set but empty; unset it (to search ./data and "
                       f"../shared/data) or set it to the folder that holds the data.")
    folder = pathlib.Path(value).expanduser()
    if not folder.is_dir():
      raise ValueError(f"${DATA_ENV}={value!r} is not a folder; set it to the folder that holds "
                       "femnist/, shakespeare/ or cifar10/, or unset it.")
    return [folder]
  candidates = []
  cwd = pathlib.Path.cwd()
  candidates += [cwd / "data", cwd.parent / "shared" / "data"]
  candidates += [_REPO_ROOT / "data", _REPO_ROOT.parent / "shared" / "data"]
  seen, folders = set(), []
  for folder in candidates:
    key = str(folder.resolve()) if folder.exists() else str(folder.absolute())
    if key not in seen:
      seen.add(key)
      folders.append(folder)
  return folders


def find_data_file(relative_path: str, dataset: str) -> pathlib.Path:
  """Finds ``relative_path`` (e.g. ``"femnist/x.npz"``) in the first data folder holding it.

  Args:
    relative_path: path of the file or folder below the data folder.
    dataset: dataset name, used to say how to obtain the file.

  Returns:
    The absolute path of the file.

  Raises:
    FileNotFoundError: one line naming the file, every folder searched and how to get it.
  """
  return locate_first((relative_path,), dataset, None)


def missing(relative_paths: Sequence[str], dataset: str, folders: Sequence[pathlib.Path]) -> str:
  """The one-line error for data found in none of ``folders``."""
  names = " or ".join(f"'{p}'" for p in relative_paths)
  searched = ", ".join(str(f.absolute()) for f in folders)
  how = HOW_TO_GET.get(dataset, "see the data notes in docs/running.md")
  return (f"no {dataset} data ({names}) in {searched}: {how}; or set ${DATA_ENV} to the folder "
          "that holds it.")


def locate_first(relative_paths: Sequence[str], dataset: str,
                 data_dir: str | os.PathLike | None) -> pathlib.Path:
  """The first of ``relative_paths`` found in ``data_dir`` (when given) or the data folders.

  Each folder is tried with every path before the next folder.

  Raises:
    FileNotFoundError: one line naming the file(s), the folder(s) searched and how to get them.
  """
  folders = data_folders() if data_dir is None else [pathlib.Path(data_dir).expanduser()]
  for folder in folders:
    for relative_path in relative_paths:
      path = folder / relative_path
      if path.exists():
        return path.resolve()
  raise FileNotFoundError(missing(relative_paths, dataset, folders))


def tfds_dir() -> pathlib.Path:
  """Folder for the prepared tfds records: ``$CLIPJAX_TFDS_DIR``, else ``<cache>/tfds``."""
  if os.environ.get(TFDS_ENV):
    return pathlib.Path(os.environ[TFDS_ENV]).expanduser()
  return cache_dir() / "tfds"


def locate(relative_path: str, dataset: str, data_dir: str | os.PathLike | None) -> pathlib.Path:
  """Finds a raw file in ``data_dir`` when given, else through :func:`find_data_file`.

  Raises:
    FileNotFoundError: one line naming the file, the folder(s) searched and how to get it.
  """
  return locate_first((relative_path,), dataset, data_dir)
