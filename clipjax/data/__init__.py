"""Federated datasets (FEMNIST, Shakespeare, CIFAR-10) from real files via tensorflow-datasets.

Host side: :func:`load_federated` prepares tfds ``array_record`` records once, chooses clients as a
pure function of the seed and packs them into fixed shapes ``[C, N_max, ...]`` with a ``valid``
mask. Device side: :func:`example_batch` cuts one client's model inputs and labels (jittable).
"""

from clipjax.data.batching import example_batch, pooled_batch
from clipjax.data.federated import DATASETS, choose_clients, load_federated
from clipjax.data.packing import ClientArrays, FederatedData, pack_images, pack_text
from clipjax.data.partition import label_skew, partition_dirichlet, partition_iid
from clipjax.data.paths import find_data_file
from clipjax.data.shakespeare import summary as shakespeare_summary

__all__ = [
    "DATASETS",
    "ClientArrays",
    "FederatedData",
    "choose_clients",
    "example_batch",
    "pooled_batch",
    "find_data_file",
    "label_skew",
    "load_federated",
    "pack_images",
    "pack_text",
    "partition_dirichlet",
    "partition_iid",
    "shakespeare_summary",
]
