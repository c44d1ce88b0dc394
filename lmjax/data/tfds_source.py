"""TensorFlow Datasets splits as plain Python lists, with or without TensorFlow.

Datasets prepared as array_record (or parquet) are read with `tfds` random-access data sources,
which need no TensorFlow. Datasets stored as tfrecord (TFDS's default) are read with
`builder.as_dataset`, which needs the `tf` extra (`pip install -e .[tf]`). Nothing is ever
downloaded: a dataset must be prepared beforehand, e.g.
`tfds build tiny_shakespeare --file_format=array_record` (building may itself need TensorFlow for
some datasets).

Every problem the user can fix (unknown name, unprepared dataset, missing split, missing TensorFlow,
ambiguous text feature) raises `UserError` with one line.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from lmjax.data.text import ParallelPairs, drop_blank_pairs, split_lines
from lmjax.errors import UserError, first_line

_READ_CHUNK = 4096  # Examples per batched read from a data source.


def _builder(name: str, data_dir: str | None) -> tfds.core.DatasetBuilder:
  """The builder for `name`: registered in tfds, or read back from files under `data_dir`."""
  not_found = tfds.core.registered.DatasetNotFoundError
  try:
    try:
      return tfds.builder(name, data_dir=data_dir)
    except not_found:
      # tfds registers its legacy builders (wmt*_translate, …) by importing their packages in
      # turn, and gives up at the first that fails (nearest_neighbors needs h5py), so text and
      # translate may never be registered: import the families lmjax reads, then look again.
      for package in ('text', 'translate'):
        try:
          importlib.import_module(f'tensorflow_datasets.{package}')
        except ImportError:
          pass  # Then the name is simply unknown, which is what gets reported.
      return tfds.builder(name, data_dir=data_dir)
  except not_found:
    where = data_dir or tfds.core.constants.DATA_DIR
    raise UserError(f"unknown TFDS dataset '{name}': not in tensorflow-datasets {tfds.__version__} "
                    f'and not prepared in {where}') from None
  except ImportError as e:
    raise UserError(f"TFDS dataset '{name}' needs a missing package ({first_line(e)}); for "
                    "TensorFlow install the tf extra: pip install -e .[tf]") from None
  except ValueError as e:
    raise UserError(f"bad TFDS dataset name '{name}': {first_line(e)}") from None


def _prepared_builder(name: str, split: str, data_dir: str | None) -> tfds.core.DatasetBuilder:
  """The builder, after checking the dataset is prepared and has every split named in `split`."""
  builder = _builder(name, data_dir)
  if not builder.is_prepared():
    raise UserError(f"TFDS dataset '{name}' is not prepared in {builder.data_dir} (lmjax does not "
                    f'download): run `tfds build {name} --file_format=array_record'
                    f"{' --data_dir=' + data_dir if data_dir else ''}`")
  known = list(builder.info.splits.keys())
  # A split string may slice and combine splits: 'train[:10%]+validation'.
  for part in split.split('+'):
    base = part.split('[', 1)[0].strip()
    if base not in known:
      raise UserError(f"TFDS dataset '{name}' has no split '{base}' (splits: {', '.join(known)})")
  return builder


def _examples(builder: tfds.core.DatasetBuilder, name: str, split: str) -> Iterator[Any]:
  """Yields the examples of `split` as numpy values (bytes for text), in the stored order."""
  file_format = builder.info.file_format
  if file_format in tfds.core.file_adapters.FileFormat.with_random_access():
    try:
      source = builder.as_data_source(split=split)
    except (ImportError, ValueError, NotImplementedError) as e:
      raise UserError(f"cannot read TFDS dataset '{name}' split '{split}': "
                      f'{first_line(e)}') from None
    for start in range(0, len(source), _READ_CHUNK):
      yield from source.__getitems__(range(start, min(start + _READ_CHUNK, len(source))))
    return
  fmt = file_format.value if file_format else 'tfrecord'
  if importlib.util.find_spec('tensorflow') is None:
    raise UserError(f"TFDS dataset '{name}' in {builder.data_dir} is stored as {fmt}, which needs "
                    'TensorFlow: install the tf extra (pip install -e .[tf]) or prepare it again '
                    'with --file_format=array_record')
  dataset = builder.as_dataset(split=split, shuffle_files=False)
  yield from tfds.as_numpy(dataset)


def _string_keys(features: Any) -> list[str]:
  """Top-level features holding one string per example."""
  keys = []
  for key in features.keys():
    feature = features[key]
    if isinstance(feature, tfds.features.Text):
      keys.append(key)
    elif (isinstance(feature, tfds.features.Tensor) and feature.shape == ()
          and feature.np_dtype in (np.object_, np.bytes_, np.str_)):
      keys.append(key)
  return keys


def _as_str(value: Any, name: str, key: str) -> str:
  if isinstance(value, bytes):  # Includes np.bytes_.
    try:
      return value.decode('utf-8')
    except UnicodeDecodeError as e:
      raise UserError(f"TFDS dataset '{name}' feature '{key}' is not UTF-8: {e.reason} at byte "
                      f'{e.start}') from None
  return str(value)


def load_text_split(name: str, split: str, *, text_key: str | None = None,
                    data_dir: str | None = None) -> list[str]:
  """Reads one text feature of a TFDS split as a list of lines.

  Args:
    name: dataset name, optionally with config and version ('lm1b', 'tiny_shakespeare:1.0.0').
    split: split name, slices allowed ('train', 'train[:1%]').
    text_key: the feature to read; None picks the only string feature.
    data_dir: where the dataset was prepared (None: TFDS's default, ~/tensorflow_datasets).

  Returns:
    The text, one entry per line: examples that contain newlines are split into lines
    (tiny_shakespeare stores a whole split as one example), so the result reads like a local text
    file.
  """
  builder = _prepared_builder(name, split, data_dir)
  keys = _string_keys(builder.info.features)
  if text_key is None:
    if len(keys) != 1:
      raise UserError(f"TFDS dataset '{name}' has {len(keys)} text features "
                      f"({', '.join(keys) or 'none'}): set text_key")
    text_key = keys[0]
  elif text_key not in keys:
    raise UserError(f"TFDS dataset '{name}' has no text feature '{text_key}' "
                    f"(text features: {', '.join(keys) or 'none'})")
  lines = []
  for example in _examples(builder, name, split):
    text = _as_str(example[text_key], name, text_key)
    if '\n' in text or '\r' in text:
      lines.extend(split_lines(text))
    else:
      lines.append(text)
  if not lines:
    raise UserError(f"TFDS dataset '{name}' split '{split}' is empty")
  return lines


def load_parallel_split(name: str, split: str, src_lang: str, tgt_lang: str,
                        data_dir: str | None = None) -> ParallelPairs:
  """Reads a TFDS translation split as (source, target) pairs.

  Features must be keyed by language code (tfds `Translation`, as in 'wmt14_translate/de-en'). Pairs
  with a blank side are dropped, as for local files; their count is in the result's `num_dropped`.
  """
  builder = _prepared_builder(name, split, data_dir)
  keys = _string_keys(builder.info.features)
  for lang in (src_lang, tgt_lang):
    if lang not in keys:
      raise UserError(f"TFDS dataset '{name}' has no language '{lang}' "
                      f"(text features: {', '.join(keys) or 'none'})")
  src, tgt = [], []
  for example in _examples(builder, name, split):
    src.append(_as_str(example[src_lang], name, src_lang))
    tgt.append(_as_str(example[tgt_lang], name, tgt_lang))
  pairs = drop_blank_pairs(src, tgt)
  if not pairs:
    raise UserError(f"TFDS dataset '{name}' split '{split}' has no pair with both sides non-blank")
  return pairs




def load_columns(name: str, split: str, columns: list[str],
                 data_dir: str | None = None) -> tuple[dict, dict]:
  """Named features of a TFDS split (classification: 'glue/sst2' has sentence, label, idx).

  Returns:
    ({column: list of values} with text as str and numbers as Python scalars, {column: class
    names} for the columns that are tfds ClassLabel features).
  """
  builder = _prepared_builder(name, split, data_dir)
  features = builder.info.features
  for col in columns:
    if col not in features.keys():
      raise UserError(f"TFDS dataset '{name}' has no feature '{col}' "
                      f"(features: {', '.join(features.keys())})")
  names = {c: tuple(features[c].names) for c in columns
           if isinstance(features[c], tfds.features.ClassLabel)}
  text = set(_string_keys(features))
  out = {c: [] for c in columns}
  for example in _examples(builder, name, split):
    for c in columns:
      v = example[c]
      out[c].append(_as_str(v, name, c) if c in text else np.asarray(v).item())
  if not out[columns[0]]:
    raise UserError(f"TFDS dataset '{name}' split '{split}' is empty")
  return out, names
