"""Downloads the raw data from the public sources the field uses, each file checked by sha256.

  python scripts/download_data.py femnist        # LEAF FEMNIST JSON, 167 files, 296 MB
  python scripts/download_data.py shakespeare    # Project Gutenberg #100 (LEAF's text), 2 MB
  python scripts/download_data.py cifar10        # official CIFAR-10 binary archive, 170 MB
  python scripts/download_data.py all

Files go to `--dest` (default: `$CLIPJAX_DATA` if set, else `./data`), where the loaders find
them. Without `--dest`, a dataset the loaders already find (in `$CLIPJAX_DATA`, `./data` or
`../shared/data`) is not downloaded again. An interrupted download resumes when run again; a
file already in place with the pinned sha256 is skipped. `$CLIPJAX_DATA_MIRROR` (or `--mirror`) is a base URL serving the data folder's
layout (`<mirror>/shakespeare/shakespeare.txt.gz`, ...) instead of the public origins. Origins and
checksums: `clipjax/data/download.py`.
"""

import os
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import _cli  # noqa: E402
from absl import app, flags  # noqa: E402

from clipjax.data import download, paths  # noqa: E402

_DEST = flags.DEFINE_string("dest", None, "Data folder to fill (default: $CLIPJAX_DATA, else "
                            "./data).")
_MIRROR = flags.DEFINE_string("mirror", None, "Base URL of a mirror of the data folder (default: "
                              "$CLIPJAX_DATA_MIRROR, else the public origins).")


def main(argv):
  names = argv[1:]
  if not names:
    raise app.UsageError("name what to download: femnist, shakespeare, cifar10 or all.")
  unknown = [n for n in names if n not in download.DATASETS + ("all",)]
  if unknown:
    sys.exit(f"error: unknown dataset {', '.join(unknown)}; choose from "
             f"{', '.join(download.DATASETS)} or all.")
  datasets = list(download.DATASETS) if "all" in names else list(dict.fromkeys(names))
  dest = pathlib.Path(_DEST.value or os.environ.get(paths.DATA_ENV) or "data").expanduser()
  if dest.exists() and not dest.is_dir():
    sys.exit(f"error: --dest {dest} is a file, not a folder; name a folder.")
  if not _DEST.value:
    for name in list(datasets):
      if (found := download.present(name)) is not None:
        print(f"{name}: found at {found}; nothing downloaded (--dest=<folder> downloads anyway).")
        datasets.remove(name)
    if not datasets:
      return
  try:
    files = download.download(datasets, dest, mirror=_MIRROR.value)
  except download.DownloadError as e:
    sys.exit(f"error: {e}")
  except KeyboardInterrupt:
    sys.exit("stopped; the partial file is kept and the same command resumes it.")
  size = sum(f.stat().st_size for f in files)
  print(f"{', '.join(datasets)}: {len(files)} files, {size / 1e6:.1f} MB, sha256 checked, in "
        f"{dest.resolve()}")
  if dest.resolve() not in [f.resolve() for f in paths.data_folders() if f.exists()]:
    print(f"note: {dest} is not searched by default; set {paths.DATA_ENV}={dest.resolve()}")


if __name__ == "__main__":
  _cli.run(main)
