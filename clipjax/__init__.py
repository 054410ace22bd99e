"""clipjax: CLIP (client-side invariant pruning) for secure federated learning, in JAX.

References:
  DiMaggio, Saileshwar, Sharma. CLIP: Client-Side Invariant Pruning for Mitigating Stragglers
  in Secure Federated Learning. arXiv:2510.16694, 2025.
"""

__version__ = "0.1.0"
