"""Test-wide settings: strict dtype promotion (uint32 field arithmetic must never promote)."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=1")

import jax  # noqa: E402

jax.config.update("jax_numpy_dtype_promotion", "strict")
