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

from clipjax.cache import cache_dir

DATA_ENV = "CLIPJAX_DATA"
TFDS_ENV = "CLIPJAX_TFDS_DIR"
_REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]

# What each dataset folder needs and how to obtain it; quoted in missing-file errors.
HOW_TO_GET = {
    "femnist": (
        "Put LEAF's FEMNIST output in <data>/femnist/: the packed npz "
        "'femnist_leaf_300writers_uint8.npz' (see femnist/README.md of the shared data folder), or "
        "pass data_dir=<a LEAF folder with train/*.json and test/*.json> (LEAF's "
        "data/femnist/preprocess.sh output, github.com/TalwalkarLab/leaf)."
    ),
    "shakespeare": (
        "Put Project Gutenberg etext #100 (1994 World Library edition, the file LEAF's get_data.sh "
        "downloads as 1994-01-100.zip -> 100.txt), gzipped, at "
        "<data>/shakespeare/shakespeare.txt.gz."
    ),
    "cifar10": (
        "Put the CIFAR-10 image-folder zip (train/<class>/*.jpg, test/<class>/*.jpg) at "
        "<data>/cifar10/cifar10_jpeg.zip, or make tensorflow-datasets' 'cifar10' available "
        "locally (tfds.data_source('cifar10'), needs a download once)."
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
    FileNotFoundError: naming the file, every folder searched and how to get the file.
  """
  folders = data_folders()
  for folder in folders:
    path = folder / relative_path
    if path.exists():
      return path.resolve()
  searched = "\n".join(f"  - {f.absolute()}" for f in folders)
  env = os.environ.get(DATA_ENV)
  raise FileNotFoundError(
      f"Data file '{relative_path}' for dataset '{dataset}' not found. Folders searched "
      f"(${DATA_ENV}={env!r}, ./data, ../shared/data, and the same relative to the repository):\n"
      f"{searched}\nHow to get it: {HOW_TO_GET.get(dataset, 'see the data README.')}\n"
      f"Set ${DATA_ENV} to the folder that holds '{relative_path}'."
  )


def tfds_dir() -> pathlib.Path:
  """Folder for the prepared tfds records: ``$CLIPJAX_TFDS_DIR``, else ``<cache>/tfds``."""
  if os.environ.get(TFDS_ENV):
    return pathlib.Path(os.environ[TFDS_ENV]).expanduser()
  return cache_dir() / "tfds"


def locate(relative_path: str, dataset: str, data_dir: str | os.PathLike | None) -> pathlib.Path:
  """Finds a raw file in ``data_dir`` when given, else through :func:`find_data_file`.

  Raises:
    FileNotFoundError: naming the file, the folder(s) searched and how to get the file.
  """
  if data_dir is None:
    return find_data_file(relative_path, dataset)
  path = pathlib.Path(data_dir).expanduser() / relative_path
  if not path.exists():
    raise FileNotFoundError(
        f"Data file '{relative_path}' for dataset '{dataset}' not found in the given "
        f"data_dir={str(data_dir)!r} (searched: {path.parent.absolute()}).\n"
        f"How to get it: {HOW_TO_GET.get(dataset, 'see the data README.')}"
    )
  return path.resolve()
