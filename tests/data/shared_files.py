"""Files that only the project's shared data folder holds (the packed FEMNIST npz, the LEAF tars).

`scripts/download_data.py` fetches the public originals instead (LEAF's JSON, the CIFAR-10
binary archive), so outside the project's workspace a test reading one of these files directly
is skipped with this reason; the tests that read data through the loaders run on either.
"""

import pytest

from clipjax.data import find_data_file


def shared_file(relative_path: str, dataset: str):
  """The path of `relative_path` in the data folders, or a skip naming why it is absent."""
  try:
    return find_data_file(relative_path, dataset)
  except FileNotFoundError:
    pytest.skip(f"{relative_path} is only in the project's shared data folder (download_data.py "
                "fetches the public originals, which the loader tests cover)")
