"""A Cloud Storage emulator on 127.0.0.1 for the tests: gcp-storage-emulator plus the object
generations that TensorStore's GCS driver (orbax's writer for gs:// checkpoints) relies on.

The emulator stores objects but ignores generation preconditions and sends no generation
header with a download; TensorStore reads the generation of every object it reads and makes
every write conditional on it. This adds both, as the real service does:
`x-goog-generation` on downloads, and `ifGenerationMatch` / `ifGenerationNotMatch` on
downloads, uploads and deletes (412 when a precondition fails, 304 for a not-match read).

  python tests/gcs_emulator.py PORT BUCKET     # serves until killed
"""

import http
import sys
import time

from gcp_storage_emulator.exceptions import NotFound
from gcp_storage_emulator.handlers import objects


def _current_generation(storage, bucket: str, name: str) -> str:
  """'0' for a missing object, as GCS's preconditions count it."""
  try:
    return str(storage.get_file_obj(bucket, name)['generation'])
  except NotFound:
    return '0'


def _query(request, key: str):
  values = request.query.get(key)
  return values[0] if values else None


def _preconditions_hold(request, response, storage, bucket: str, name: str) -> bool:
  generation = _current_generation(storage, bucket, name)
  match, not_match = _query(request, 'ifGenerationMatch'), _query(request, 'ifGenerationNotMatch')
  if match is not None and match != generation:
    response.status = http.HTTPStatus.PRECONDITION_FAILED
    return False
  if not_match is not None and not_match == generation:
    response.status = (http.HTTPStatus.NOT_MODIFIED if request.method == 'GET'
                       else http.HTTPStatus.PRECONDITION_FAILED)
    return False
  return True


def _download(original):
  def handler(request, response, storage, *args, **kwargs):
    bucket, name = request.params['bucket_name'], request.params['object_id']
    if not _preconditions_hold(request, response, storage, bucket, name):
      return None
    generation = _current_generation(storage, bucket, name)
    if generation != '0':
      response['x-goog-generation'] = generation
      response['x-goog-metageneration'] = '1'
    return original(request, response, storage, *args, **kwargs)
  return handler


def _insert(original):
  def handler(request, response, storage, *args, **kwargs):
    name = _query(request, 'name')
    if name is not None and not _preconditions_hold(
        request, response, storage, request.params['bucket_name'], name):
      return None
    time.sleep(1e-6)  # generations come from time_ns(): keep two writes apart
    return original(request, response, storage, *args, **kwargs)
  return handler


def _by_object_id(original):
  def handler(request, response, storage, *args, **kwargs):
    if not _preconditions_hold(request, response, storage, request.params['bucket_name'],
                               request.params['object_id']):
      return None
    return original(request, response, storage, *args, **kwargs)
  return handler


def _get(original, download):
  def handler(request, response, storage, *args, **kwargs):
    if _query(request, 'alt') == 'media':
      return download(request, response, storage, *args, **kwargs)
    return _by_object_id(original)(request, response, storage, *args, **kwargs)
  return handler


def patch_handlers() -> None:
  """Wraps the object handlers; must run before gcp_storage_emulator.server is imported (its
  routing table holds the functions)."""
  download = _download(objects.download)
  objects.get = _get(objects.get, download)
  objects.download = download
  objects.insert = _insert(objects.insert)
  objects.delete = _by_object_id(objects.delete)


def main(port: int, bucket: str) -> None:
  patch_handlers()
  from gcp_storage_emulator.server import create_server  # pylint: disable=g-import-not-at-top
  server = create_server('127.0.0.1', port, in_memory=True, default_bucket=bucket)
  server.run()


if __name__ == '__main__':
  main(int(sys.argv[1]), sys.argv[2])
