"""Workdir paths: local directories and object-store URIs (gs://, s3://) through one library.

Every read and write under a workdir (checkpoints, the tokenizer, metrics.jsonl, TensorBoard
events, reports) goes through etils `epath`, the path library orbax and TFDS use, so
`--workdir=gs://BUCKET/run` works like a local directory once the `gcs` extra (gcsfs) is
installed; orbax writes the arrays there with TensorStore's own GCS driver.

What differs on an object store, and how lmjax handles it:

- There are no directories: `makedirs` is a no-op there and a "directory" exists once an
  object lies under it.
- There is no rename: a local file is written to a temporary name and renamed over the old
  one (a crash leaves the old file or the new one, never half of one); an object PUT is
  already all-or-nothing, so remote files are written in place.
- There is no append: `append_text` rewrites the whole object (metrics.jsonl is small).
- There is no flock: the single-writer guard (`cli.lock_workdir`) only protects local
  workdirs; on a bucket, make sure one job owns a workdir (the launchers give every job its
  own).
"""

import contextlib
import os
import secrets
import shutil
import tempfile
from typing import Iterable, Iterator, Union

from etils import epath

from lmjax.errors import UserError

PathLike = Union[str, os.PathLike]

# URI schemes epath serves through fsspec / TensorStore rather than the local filesystem.
REMOTE_SCHEMES = ('gs://', 's3://', 'az://')


def is_remote(path: PathLike) -> bool:
  return os.fspath(path).startswith(REMOTE_SCHEMES)


def Path(path: PathLike) -> epath.Path:  # pylint: disable=invalid-name
  """An epath.Path; local paths are made absolute (orbax wants absolute directories)."""
  path = os.fspath(path)
  return epath.Path(path if is_remote(path) else os.path.abspath(path))


def join(path: PathLike, *parts: str) -> str:
  """path/part/... as a string, for local paths and URIs alike."""
  path = os.fspath(path)
  if not is_remote(path):
    return os.path.join(path, *parts)
  return os.fspath(epath.Path(path).joinpath(*parts))


def exists(path: PathLike) -> bool:
  return Path(path).exists()


def isdir(path: PathLike) -> bool:
  return Path(path).is_dir()


def isfile(path: PathLike) -> bool:
  return Path(path).is_file()


def listdir(path: PathLike) -> list[str]:
  """Names directly under path ([] when it does not exist)."""
  p = Path(path)
  if not p.is_dir():
    return []
  return sorted(child.name for child in p.iterdir())


def makedirs(path: PathLike) -> None:
  Path(path).mkdir(parents=True, exist_ok=True)


def read_text(path: PathLike) -> str:
  return Path(path).read_text(encoding='utf-8')


def write_atomically(path: PathLike, chunks: Iterable[bytes]) -> None:
  """Writes `chunks` as the whole of `path`: the old content or the new one survives a crash,
  never a mix. Locally, a new file beside `path` (the usual mode, 0666 & ~umask) renamed over
  it; on an object store, one upload (a PUT is all or nothing). An unwritable path is a
  UserError naming it."""
  path = os.fspath(path)
  if is_remote(path):
    try:
      with Path(path).open('wb') as f:
        for chunk in chunks:
          f.write(chunk)
    except OSError as e:
      raise UserError(f'cannot write {path}: {e.strerror or e}') from None
    return
  directory = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(directory):
    raise UserError(f'cannot write {path}: directory {directory} does not exist')
  if os.path.isdir(path):
    raise UserError(f'cannot write {path}: it is a directory')
  while True:  # os.open rather than mkstemp, whose files are 0600
    tmp = os.path.join(directory, f'.{os.path.basename(path)}.{secrets.token_hex(4)}.tmp')
    try:
      fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
      break
    except FileExistsError:
      continue
    except OSError as e:
      raise UserError(f'cannot write {path}: {e.strerror or e}') from None
  try:
    with os.fdopen(fd, 'wb') as f:
      for chunk in chunks:
        f.write(chunk)
    os.replace(tmp, path)
  except BaseException as e:
    if os.path.exists(tmp):
      os.unlink(tmp)
    if isinstance(e, OSError):
      raise UserError(f'cannot write {path}: {e.strerror or e}') from None
    raise


def write_bytes(path: PathLike, data: bytes) -> None:
  """write_atomically of one buffer; a missing local parent directory is created."""
  if not is_remote(path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  write_atomically(path, [data])


def write_text(path: PathLike, text: str) -> None:
  write_bytes(path, text.encode('utf-8'))


class TextAppender:
  """A line-appending writer: a local file opened 'a', or an object rewritten on flush."""

  def __init__(self, path: PathLike):
    self.path = os.fspath(path)
    self._remote = is_remote(self.path)
    if self._remote:
      p = Path(self.path)
      self._text = p.read_text(encoding='utf-8') if p.exists() else ''
      self._dirty = False
    else:
      os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
      self._f = open(self.path, 'a', encoding='utf-8')

  def write(self, text: str) -> None:
    if self._remote:
      self._text += text
      self._dirty = True
    else:
      self._f.write(text)

  def flush(self) -> None:
    if self._remote:
      if self._dirty:
        Path(self.path).write_text(self._text, encoding='utf-8')
        self._dirty = False
    else:
      self._f.flush()

  def close(self) -> None:
    self.flush()
    if not self._remote:
      self._f.close()


def move(src: PathLike, dst: PathLike) -> None:
  """Moves a file or directory tree (a copy and delete on object stores)."""
  if is_remote(src) or is_remote(dst):
    Path(src).rename(Path(dst))
  else:
    shutil.move(os.fspath(src), os.fspath(dst))


@contextlib.contextmanager
def new_directory(path: str, what: str) -> Iterator[str]:
  """Yields a local temporary directory that becomes `path` (new, or empty) when the block
  ends without an error, so that a failed build leaves nothing behind: renamed into place
  beside it, or built in the local temporary directory and uploaded on an object store.
  `what` names the flag in errors."""
  remote = is_remote(path)
  parent = tempfile.gettempdir() if remote else os.path.dirname(os.path.abspath(path))
  try:
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f'.{os.path.basename(os.path.abspath(path))}.new-',
                           dir=parent)
  except OSError as e:
    raise UserError(f'{what}: cannot create {path} ({e.strerror or e})') from None
  try:
    yield tmp
    if remote:
      upload_tree(tmp, path)
      shutil.rmtree(tmp)
    else:
      if os.path.isdir(path):
        os.rmdir(path)  # empty (the caller checked)
      os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp's 0700
      os.rename(tmp, path)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


def upload_tree(local_dir: str, dest: PathLike) -> None:
  """Copies the files below a local directory to dest (any path), keeping the layout."""
  for root, _, files in os.walk(local_dir):
    rel = os.path.relpath(root, local_dir)
    for name in files:
      with open(os.path.join(root, name), 'rb') as f:
        write_bytes(join(dest, *([] if rel == '.' else rel.split(os.sep)), name), f.read())
