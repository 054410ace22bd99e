"""Shakespeare (LEAF): one client per speaking role per play, next-character prediction (host side).

Built from the raw Project Gutenberg etext #100 (``<data>/shakespeare/shakespeare.txt.gz``) with
LEAF's construction (``data/shakespeare/preprocess``, re-implemented here):

1. The first line is dropped; everything before the second "by William Shakespeare" header
   (contents, the sonnets) and after line 124,197 of the file (the end of the plays in this
   edition) is ignored. Each "by William Shakespeare" line starts a play whose title is the
   nearest non-blank line 2 to 7 lines above it.
2. ``  NAME. speech`` (two-space indent) starts a speech of role NAME (upper-cased); lines with a
   four-space indent continue the current speech. THE COMEDY OF ERRORS is mis-indented in this
   edition: there a speech starts with an unindented ``NAME. speech``, every following line
   continues it, ``ACT ...`` headers and the ``<<THIS ELECTRONIC VERSION ... WORLD LIBRARY>>``
   notices end it. Elsewhere the notices match neither pattern and are skipped. Plays with
   at most one role are dropped, and so are roles with at most two speech lines.
3. Client id = play title + role with non-word characters replaced by ``_``; a role's text is its
   lines, each followed by a newline, with newlines turned into spaces and runs of two or more
   spaces collapsed to one.
4. Samples: every 80-character window -> the next character (n = len(text) - 80 windows).
   LEAF's ``-t sample --tf 0.8`` split by sample order: n_train = max(1, int(0.8 n)) (1 if n is
   2); test windows start at n_train + 79 (LEAF's gap), so the test text shares only one
   character (the last train label) with the train text; roles without a train and a test
   window are dropped. (Starting test windows at n_train instead would put 79 characters of
   train text into test inputs.)

Stored per role (NOT as materialised windows, ~4.2 M x 81 bytes): train text
``text[: n_train + 80]`` and test text ``text[n_train + 79 :]``; windows are cut at batch time.

Vocabulary: LEAF's 80 symbols ``ALL_LETTERS``; symbol id = position. LEAF looks characters up
with ``str.find``, giving -1 for unknown ones, which its one-hot labels turn into the last class;
here unknown characters (none occur in the constructed texts) map to that last id, 79 ('}').

Measured on this file (:func:`summary`): 36 plays (All's Well ... The Winter's Tale; the
sonnets and A Lover's Complaint fall outside LEAF's line range), 1,145 roles with more than two
speech lines, of which 1,130 have at least one window, with 4,226,206 windows in all. LEAF's paper
reports 1,129 devices and 4,226,158 samples for the same text: one role and 48 windows (0.001%)
fewer. Two of our roles have exactly 48 windows (KING_HENRY_THE_EIGHTH_VAUX,
THE_TRAGEDY_OF_TITUS_ANDRONICUS_GOTH); the difference is most likely one such small role lost to
a detail of LEAF's pipeline or edition (the data README notes one word of the Henry V Act III
chorus differs from a published LEAF intermediate), but we could not pin it down. LEAF's README
says 2,288 users; no variant we tried reproduces that (without the upper-casing of role names:
1,132 roles), so we take the paper's figures as the reference.

LEAF's split then keeps 799 roles (a role needs n - int(0.8 n) >= 80 windows, i.e. about 400
windows, to get a test window after the 79-window gap): 3,335,127 train and 771,051 test windows.
Clients with few windows can also be dropped at load time with ``min_examples``.

References:
  Caldas et al. LEAF: A Benchmark for Federated Settings. arXiv:1812.01097, 2018.
  McMahan et al. Communication-Efficient Learning of Deep Networks from Decentralized Data.
  AISTATS 2017 (the per-role Shakespeare task).
"""

from __future__ import annotations

import collections
import gzip
import pathlib
import re

import numpy as np
import tensorflow_datasets as tfds

from clipjax.data import paths, tfds_store

RAW_FILE = "shakespeare/shakespeare.txt.gz"
RAW_FILES = (RAW_FILE,)  # what load_clients looks for
ALL_LETTERS = "\n !\"&'(),-.0123456789:;>?ABCDEFGHIJKLMNOPQRSTUVWXYZ[]abcdefghijklmnopqrstuvwxyz}"
NUM_SYMBOLS = len(ALL_LETTERS)  # 80
UNKNOWN_ID = NUM_SYMBOLS - 1
SEQ_LEN = 80
TRAIN_FRACTION = 0.8
_AUTHOR_LINE = "by William Shakespeare"
_LAST_LINE = 124_197  # 1-based line of the file after which LEAF stops (end of the plays).
_SPEECH = re.compile(r"^  ([a-zA-Z][a-zA-Z ]*)\. (.*)")
_CONTINUED = re.compile(r"^    (.*)")
_COE_SPEECH = re.compile(r"^([a-zA-Z][a-zA-Z ]*)\. (.*)")
_COE_CONTINUED = re.compile(r"^(.*)")

_LOOKUP = np.full(256, UNKNOWN_ID, dtype=np.uint8)
_LOOKUP[np.frombuffer(ALL_LETTERS.encode("ascii"), dtype=np.uint8)] = np.arange(NUM_SYMBOLS)


def encode(text: str) -> np.ndarray:
  """Symbol ids uint8 [len(text)] in LEAF's vocabulary (unknown characters -> 79)."""
  return _LOOKUP[np.frombuffer(text.encode("latin-1", errors="replace"), dtype=np.uint8)]


def decode(ids: np.ndarray) -> str:
  """Inverse of :func:`encode` for known symbols."""
  return "".join(ALL_LETTERS[int(i)] for i in np.asarray(ids))


def split_into_plays(full_text: str) -> list[tuple[str, dict[str, list[str]]]]:
  """Splits the Gutenberg text into ``(title, {ROLE: [speech lines]})`` as LEAF does."""
  lines = full_text.splitlines()[1:]
  headers = [i for i, line in enumerate(lines) if _AUTHOR_LINE in line]
  if len(headers) < 2:
    raise ValueError("Not the Gutenberg #100 text: fewer than two 'by William Shakespeare'.")
  plays: list[tuple[str, dict[str, list[str]]]] = []
  roles: dict[str, list[str]] = {}
  role, comedy_of_errors = None, False
  for i in range(headers[1] - 5, min(len(lines), _LAST_LINE - 1)):
    line = lines[i]
    if _AUTHOR_LINE in line:
      above = [lines[j].strip() for j in range(i - 2, i - 8, -1)]
      title = next((t for t in above if t), above[-1])
      if not title:
        raise ValueError(f"No play title above line {i + 2} of the text.")
      roles, role = collections.defaultdict(list), None
      comedy_of_errors = title == "THE COMEDY OF ERRORS"
      plays.append((title, roles))
      continue
    if not plays:
      continue
    start = (_COE_SPEECH if comedy_of_errors else _SPEECH).match(line)
    if start:
      name = start.group(1).upper()  # one role may be spelt with several casings
      if comedy_of_errors and name.startswith("ACT "):
        role = None
      else:
        roles[name].append(start.group(2))
        role = name
      continue
    if role is not None:
      more = (_COE_CONTINUED if comedy_of_errors else _CONTINUED).match(line)
      if more:
        if comedy_of_errors and more.group(1).startswith("<"):
          role = None
        else:
          roles[role].append(more.group(1))
  return [(title, roles) for title, roles in plays if len(roles) > 1]


def client_id(title: str, role: str) -> str:
  """LEAF's user name: play and role with non-word characters replaced by '_'."""
  return re.sub(r"\W+", "_", f"{title}_{role}".replace(" ", "_"))


def role_texts(full_text: str) -> dict[str, str]:
  """Each client's joined text (roles with at most two speech lines dropped), in play order."""
  texts: dict[str, list[str]] = collections.defaultdict(list)
  for title, roles in split_into_plays(full_text):
    for role, speech in roles.items():
      if len(speech) > 2:
        texts[client_id(title, role)].extend(speech)
  joined = {}
  for user, speech in texts.items():
    text = "".join(s + "\n" for s in speech).replace("\n", " ")
    joined[user] = re.sub(r"  +", " ", text)
  return joined


def split_role(text: str) -> tuple[str, str] | None:
  """LEAF's per-role 80/20 split by sample order: (train text, test text) or None if dropped."""
  n = len(text) - SEQ_LEN
  if n < 2:
    return None
  n_train = 1 if n == 2 else max(1, int(TRAIN_FRACTION * n))
  if n - (n_train + SEQ_LEN - 1) < 1:
    return None
  return text[: n_train + SEQ_LEN], text[n_train + SEQ_LEN - 1 :]


class ClipjaxShakespeare(tfds_store.ManualBuilder):
  """LEAF Shakespeare, one record per (play, role) with its train and test text."""

  VERSION = tfds.core.Version("1.0.0")
  MANUAL_DOWNLOAD_INSTRUCTIONS = paths.HOW_TO_GET["shakespeare"]

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description="LEAF Shakespeare: per role text as LEAF symbol ids (windows cut later).",
        features=tfds.features.FeaturesDict({
            "client": tfds.features.Text(),
            "text": tfds.features.Tensor(
                shape=(None,), dtype=np.uint8,
                encoding=tfds.features.Encoding.BYTES),
        }),
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    raw = pathlib.Path(dl_manager.manual_dir) / pathlib.Path(RAW_FILE).name
    with gzip.open(raw, "rt", encoding="latin-1") as f:
      texts = role_texts(f.read())
    splits = {u: pair for u, text in texts.items() if (pair := split_role(text)) is not None}
    return {"train": self._generate_examples(splits, 0),
            "test": self._generate_examples(splits, 1)}

  def _generate_examples(self, splits, part):
    for i, (user, pair) in enumerate(splits.items()):
      yield i, {"client": user, "text": encode(pair[part])}


def load_clients(data_dir=None) -> tfds_store.ClientLists:
  """Prepares (once) and reads the per-role train and test texts (uint8 symbol ids)."""
  raw = paths.locate(RAW_FILE, "shakespeare", data_dir)
  builder, seconds, source = tfds_store.prepared_builder(
      ClipjaxShakespeare, data_dir=paths.tfds_dir(), manual_dir=raw.parent, raw_files=[raw]
  )
  train = tfds_store.read_split(builder, "train")
  test = tfds_store.read_split(builder, "test")
  return tfds_store.ClientLists(
      client_ids=tuple(tfds_store.as_text(r["client"]) for r in train),
      train_x=[r["text"] for r in train], train_y=None,
      test_x=[r["text"] for r in test], test_y=None,
      prepare_seconds=seconds, source=source,
  )


def summary(data_dir=None) -> dict[str, int]:
  """Counts of the constructed dataset, to compare with LEAF's published figures.

  Returns:
    ``plays``; ``roles_all`` and ``samples_all``: roles with at least one window and their
    windows before the train/test split (LEAF's paper counts); ``roles``, ``train`` and
    ``test``: roles kept by the split and their train and test windows;
    ``unknown_characters``: characters of the kept texts outside the vocabulary.
  """
  raw = paths.locate(RAW_FILE, "shakespeare", data_dir)
  with gzip.open(raw, "rt", encoding="latin-1") as f:
    full_text = f.read()
  texts = role_texts(full_text)
  windows = np.array([len(t) - SEQ_LEN for t in texts.values()])
  clients = load_clients(data_dir)
  kept = set(clients.client_ids)
  return {
      "plays": len(split_into_plays(full_text)),
      "roles_all": int((windows > 0).sum()),
      "samples_all": int(windows[windows > 0].sum()),
      "roles": len(clients.client_ids),
      "train": int(sum(len(t) - SEQ_LEN for t in clients.train_x)),
      "test": int(sum(len(t) - SEQ_LEN for t in clients.test_x)),
      "unknown_characters": sum(
          sum(c not in ALL_LETTERS for c in t) for u, t in texts.items() if u in kept),
  }
