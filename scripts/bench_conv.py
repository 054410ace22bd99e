"""Convolution formulations per layer on XLA:CPU: forward + backward of each conv layer.

For every conv layer of VGG-9 and the LEAF CNN (at the widths given), one training step's conv
work (the forward and both gradients, at the configs' batch sizes 32 and 10) is timed in three
formulations, all jitted, all checked to give the same gradients:

  nhwc    `lax.conv_general_dilated` in NHWC / HWIO (flax's `nn.Conv`, what the models use);
  nchw    the same convolution in NCHW / OIHW, transposed in and out;
  im2col  patches (`lax.conv_general_dilated_patches`) times the kernel as one matmul.

  python scripts/bench_conv.py                        # widths 1 and the CPU sweeps' (0.125, 0.25)
  python scripts/bench_conv.py --repeats=7

Prints a Markdown table (milliseconds, best of --repeats, and the fastest formulation per layer)
and one JSON line.
"""

import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags
from jax import lax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _cli  # noqa: E402

_REPEATS = flags.DEFINE_integer("repeats", 5, "timed repetitions of each formulation (best kept)")
_VGG_WIDTHS = flags.DEFINE_list("vgg9_widths", ["1.0", "0.125"], "VGG-9 width multipliers")
_LEAF_WIDTHS = flags.DEFINE_list("leaf_cnn_widths", ["1.0", "0.25"], "LEAF CNN width multipliers")

_DN = ("NHWC", "HWIO", "NHWC")


def conv_nhwc(x, w):
  return lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=_DN)


def conv_nchw(x, w):
  y = lax.conv_general_dilated(jnp.transpose(x, (0, 3, 1, 2)), jnp.transpose(w, (3, 2, 0, 1)),
                               (1, 1), "SAME", dimension_numbers=("NCHW", "OIHW", "NCHW"))
  return jnp.transpose(y, (0, 2, 3, 1))


def conv_im2col(x, w):
  k = w.shape[0]
  patches = lax.conv_general_dilated_patches(x, (k, k), (1, 1), "SAME", dimension_numbers=_DN)
  # Patch features are ordered (input channel, kh, kw).
  return patches @ jnp.transpose(w, (2, 0, 1, 3)).reshape(-1, w.shape[3])


FORMS = {"nhwc": conv_nhwc, "nchw": conv_nchw, "im2col": conv_im2col}


def vgg9_layers(width: float):
  """(batch, H=W, in channels, out channels, kernel) of VGG-9's six 3x3 convs."""
  feats = [int(c * width) for c in (32, 64, 128, 128, 256, 256)]
  return [(32, hw, cin, cout, 3) for hw, cin, cout in
          zip((32, 32, 16, 16, 8, 8), [3] + feats[:-1], feats)]


def leaf_cnn_layers(width: float):
  """The LEAF CNN's two 5x5 convs on 28x28x1 FEMNIST images."""
  feats = [int(c * width) for c in (32, 64)]
  return [(10, 28, 1, feats[0], 5), (10, 14, feats[0], feats[1], 5)]


def time_layer(n, hw, cin, cout, k, repeats, rng):
  x = jnp.asarray(rng.normal(size=(n, hw, hw, cin)).astype(np.float32))
  w = jnp.asarray(rng.normal(size=(k, k, cin, cout)).astype(np.float32) * 0.1)
  out, ref = {}, None
  for name, form in FORMS.items():
    step = jax.jit(jax.grad(lambda x, w, f=form: jnp.sum(jnp.sin(f(x, w))), argnums=(0, 1)))
    gx, gw = step(x, w)
    if ref is None:
      ref = (gx, gw)
    else:  # the same gradients up to float32 summation order
      np.testing.assert_allclose(gx, ref[0], rtol=1e-3, atol=1e-3)
      np.testing.assert_allclose(gw, ref[1], rtol=1e-3, atol=1e-2)
    best = float("inf")
    for _ in range(repeats):
      start = time.perf_counter()
      jax.block_until_ready(step(x, w))
      best = min(best, time.perf_counter() - start)
    out[name] = 1e3 * best
  return out


def main(argv):
  del argv
  rng = np.random.default_rng(0)
  models = ([(f"vgg9 x{w}", vgg9_layers(float(w))) for w in _VGG_WIDTHS.value]
            + [(f"leaf_cnn x{w}", leaf_cnn_layers(float(w))) for w in _LEAF_WIDTHS.value])
  rows, result = [], {"bench": "conv", "jax": jax.__version__,
                      "cores": len(os.sched_getaffinity(0)), "layers": []}
  for model, layers in models:
    for i, (n, hw, cin, cout, k) in enumerate(layers):
      ms = time_layer(n, hw, cin, cout, k, _REPEATS.value, rng)
      best = min(ms, key=ms.get)
      rows.append((model, f"conv{i}", f"{n}x{hw}x{hw}x{cin} -> {cout}, {k}x{k}",
                   *(f"{ms[f]:.2f}" for f in FORMS), best))
      result["layers"].append(dict(model=model, layer=i, shape=[n, hw, cin, cout, k], ms=ms,
                                   fastest=best))
      print(" | ".join(map(str, rows[-1])), flush=True)
  print("| model | layer | batch x input -> out, kernel | " + " | ".join(
      f"{f} ms" for f in FORMS) + " | fastest |")
  print("|---" * (4 + len(FORMS)) + "|")
  for row in rows:
    print("| " + " | ".join(map(str, row)) + " |")
  print(json.dumps(result))


if __name__ == "__main__":
  _cli.run(main)
