"""Getting the raw data files from their public sources, checked against pinned sha256 (host side).

Every file the loaders read comes from one public origin, fixed to the byte:

* ``cifar10``: the official CIFAR-10 binary archive (Krizhevsky, cs.toronto.edu), the URL and
  sha256 that tensorflow-datasets pins for its own ``cifar10`` builder; original lossless pixels.
* ``femnist``: LEAF's FEMNIST JSON (``preprocess.sh -s niid --sf 0.05 -k 0 -t sample --tf 0.9``),
  the 167 files of three LEAF samples committed to public repositories, fetched at fixed commits
  from raw.githubusercontent.com. LEAF's own per-writer train/test split; the loader keeps the
  300 writers with both portions, exactly the writers and images of the packed npz of the
  project's data notes (``docs/running.md#data``).
* ``shakespeare``: Project Gutenberg etext #100 (1994 World Library edition, the text LEAF's
  ``get_data.sh`` builds on), a byte-exact gzipped copy at a fixed commit on GitHub.

Each file is downloaded to ``<name>.part`` and renamed when its sha256 matches; a ``.part`` left
by an interrupted download is resumed with an HTTP range request (restarted when the server
ignores the range). A file already in place with the right sha256 is not fetched again.
``$CLIPJAX_DATA_MIRROR`` (a base URL) replaces every origin: a mirror serves the data folder's
own layout, ``<mirror>/<dataset>/<file>``, which is how the tests serve small archives from
127.0.0.1.
"""

from __future__ import annotations

import dataclasses
import http.client
import os
import pathlib
import sys
import urllib.error
import urllib.request
from typing import Iterable, Sequence

from clipjax.data import cifar10, femnist, femnist_sources, paths, shakespeare, tfds_store

MIRROR_ENV = "CLIPJAX_DATA_MIRROR"
DATASETS = ("femnist", "shakespeare", "cifar10")
_CHUNK = 1 << 20
_TIMEOUT_S = 60


@dataclasses.dataclass(frozen=True)
class Source:
  """One file: where it comes from, where it goes, what it must hash to.

  Attributes:
    url: the public origin.
    dest: path below the data folder (``<dataset>/...``); also its path below a mirror.
    sha256: the pinned digest (hex).
    size: its size in bytes (for the progress bar; 0 if unknown).
  """

  url: str
  dest: str
  sha256: str
  size: int = 0


class DownloadError(RuntimeError):
  """A file could not be fetched or did not match its sha256 (one line, naming the fix)."""


CIFAR10 = (Source(
    url="https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
    dest="cifar10/cifar-10-binary.tar.gz",
    sha256="c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
    size=170052171,
),)
SHAKESPEARE = (Source(
    url=("https://raw.githubusercontent.com/sgentle/fetch-progress-lol/"
         "23a0706212dd1bb5292280c370c592cfeb1a4b07/shakespeare.txt.gz"),
    dest="shakespeare/shakespeare.txt.gz",
    sha256="2277de5933fd43a5c42bc4fe39e16aaea8cd1854277dcd0751910d9292f92f68",
    size=2022392,
),)


def sources(dataset: str) -> tuple[Source, ...]:
  """The pinned files of ``dataset`` ("femnist", "shakespeare", "cifar10")."""
  if dataset == "cifar10":
    return CIFAR10
  if dataset == "shakespeare":
    return SHAKESPEARE
  if dataset == "femnist":
    return tuple(Source(url=f.url, dest=f.dest, sha256=f.sha256, size=f.size)
                 for f in femnist_sources.FILES)
  raise ValueError(f"Unknown dataset {dataset!r}; choose from {', '.join(DATASETS)} or all.")


# What the loaders accept for each dataset (any one of them, in their order of preference).
LOADER_FILES = {"femnist": femnist.RAW_FILES, "shakespeare": shakespeare.RAW_FILES,
                "cifar10": cifar10.RAW_FILES}


def present(dataset: str) -> pathlib.Path | None:
  """Where the loaders already find ``dataset`` in the data folders (None: nowhere)."""
  try:
    return paths.locate_first(LOADER_FILES[dataset], dataset, None)
  except FileNotFoundError:
    return None


def url_of(source: Source, mirror: str | None) -> str:
  """The URL to fetch: the origin, or ``<mirror>/<dest>`` when a mirror is given."""
  if mirror:
    return mirror.rstrip("/") + "/" + source.dest
  return source.url


def fetch(source: Source, folder: pathlib.Path, *, mirror: str | None = None,
          progress: bool = True) -> pathlib.Path:
  """Downloads one file into ``folder / source.dest`` (resuming a ``.part``), checks its sha256.

  Returns:
    The final path (already there and matching: nothing fetched).

  Raises:
    DownloadError: offline, HTTP error, or sha256 mismatch; one line naming the URL, the folder
      where a manually downloaded file goes, and (mismatch) that the bad file was removed.
  """
  target = pathlib.Path(folder) / source.dest
  if target.exists():
    if tfds_store.sha256_of(target) == source.sha256:
      return target
    raise DownloadError(
        f"{target} exists but its sha256 is not the pinned {source.sha256[:16]}...: it is not the "
        f"file from {source.url}; move it away (or delete it) and run this again.")
  target.parent.mkdir(parents=True, exist_ok=True)
  part = target.with_name(target.name + ".part")
  url = url_of(source, mirror)
  have = part.stat().st_size if part.exists() else 0
  request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
  try:
    with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response:
      resumed = have and response.status == 206
      mode = "ab" if resumed else "wb"
      done = have if resumed else 0
      length = response.headers.get("Content-Length")
      total = source.size or done + int(length or 0)
      bar = _progress_bar(target.name, total, done) if progress else None
      received = 0
      with open(part, mode) as out:
        for block in iter(lambda: response.read(_CHUNK), b""):
          out.write(block)
          received += len(block)
          if bar is not None:
            bar.update(len(block))
      if bar is not None:
        bar.close()
      if length is not None and received < int(length):
        raise ConnectionError(f"connection closed after {received} of {length} bytes")
  except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as err:
    reason = getattr(err, "reason", None) or err
    if isinstance(err, urllib.error.HTTPError):
      reason = f"HTTP {err.code} {err.reason}"
    kept = " (the partial file is kept; running this again resumes it)" if part.exists() else ""
    raise DownloadError(
        f"could not download {url}: {reason}{kept}. Offline: download it by hand and put it at "
        f"{target}, or set ${MIRROR_ENV} to a mirror of the data folder.") from None
  got = tfds_store.sha256_of(part)
  if got != source.sha256:
    part.unlink()
    raise DownloadError(
        f"{url} gave a file with sha256 {got[:16]}..., not the pinned {source.sha256[:16]}...; "
        f"the bad file was removed. Run this again, or check ${MIRROR_ENV} if set.")
  os.replace(part, target)
  return target


def download(datasets: Iterable[str], folder: str | os.PathLike, *, mirror: str | None = None,
             progress: bool = True,
             table: dict[str, Sequence[Source]] | None = None) -> list[pathlib.Path]:
  """Fetches every file of ``datasets`` into the data folder ``folder``.

  Args:
    datasets: names from :data:`DATASETS`.
    folder: the raw data folder (it then holds ``femnist/``, ``shakespeare/``, ``cifar10/``).
    mirror: base URL replacing every origin (default: ``$CLIPJAX_DATA_MIRROR`` if set).
    progress: show a progress bar per file.
    table: ``{dataset: sources}`` instead of the pinned ones (tests serve their own files).

  Returns:
    The paths of the files, in order.
  """
  if mirror is None:
    mirror = os.environ.get(MIRROR_ENV) or None
  names = list(datasets)
  for name in names:
    if name not in DATASETS:
      raise ValueError(f"Unknown dataset {name!r}; choose from {', '.join(DATASETS)} or all.")
  out = []
  for name in names:
    files = table[name] if table is not None else sources(name)
    for source in files:
      out.append(fetch(source, pathlib.Path(folder), mirror=mirror, progress=progress))
  return out


def _progress_bar(name: str, total: int, done: int):
  """A tqdm bar on stderr (bytes), starting at ``done``."""
  from tqdm import tqdm  # pylint: disable=import-outside-toplevel
  return tqdm(total=total or None, initial=done, unit="B", unit_scale=True, desc=name,
              file=sys.stderr, leave=False)
