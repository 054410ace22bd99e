"""Shared fixtures: each real dataset is prepared (tfds cache) and loaded once per session."""

import pytest

from clipjax.data import cifar10, load_federated


@pytest.fixture(scope="session")
def femnist_all():
    return load_federated("femnist", num_clients=None, seed=0)


@pytest.fixture(scope="session")
def shakespeare_all():
    return load_federated("shakespeare", num_clients=None, seed=0)


@pytest.fixture(scope="session")
def cifar10_arrays():
    return cifar10.load_arrays()
