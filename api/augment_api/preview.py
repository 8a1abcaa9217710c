"""A job's preview contact sheet, read from its output dataset on the Hub.

The runner writes the sheet into the output dataset (augment_spec.contract,
OUTPUT_PREVIEW_PATH) and records the Hub commit holding the output in the job's status
(outputRevision). That commit never changes, so a sheet read once is kept: a small
in-memory cache, bounded in entries and bytes, spares the Hub the repeated reads of a
dashboard refreshing a job page; nothing is written to disk. The Hub address comes from
HF_ENDPOINT, as for the runner; the token from a file (a mounted Secret, read at each
download so a rotated Secret takes effect). The token never appears in a message: the
errors are fixed sentences naming the dataset and the Hub's status, never the client's
exception text.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from pathlib import Path

import httpx2
from huggingface_hub import hf_hub_url
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

from augment_api.errors import BadGateway, NotFound, ServiceError
from augment_spec.contract import OUTPUT_PREVIEW_PATH

log = logging.getLogger(__name__)

CACHE_ENTRIES = 32
CACHE_BYTES = 64 * 1024 * 1024
# The largest sheet (4 columns of 320 px, 17 rows) is a few MB; anything far beyond is
# not ours and would only crowd the API's memory.
MAX_PREVIEW_BYTES = 32 * 1024 * 1024
HUB_TIMEOUT_S = 10.0


class PreviewCache:
    """Least recently used (repo, commit) -> bytes, at most `entries` and `max_bytes`."""

    def __init__(self, entries: int = CACHE_ENTRIES, max_bytes: int = CACHE_BYTES) -> None:
        self.entries = entries
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._lock = threading.Lock()  # handlers run in the threadpool

    @property
    def size(self) -> int:
        with self._lock:
            return sum(map(len, self._items.values()))

    def get(self, key: tuple[str, str]) -> bytes | None:
        with self._lock:
            data = self._items.get(key)
            if data is not None:
                self._items.move_to_end(key)
            return data

    def put(self, key: tuple[str, str], data: bytes) -> None:
        if len(data) > self.max_bytes:
            return
        with self._lock:
            self._items[key] = data
            self._items.move_to_end(key)
            while len(self._items) > self.entries or \
                    sum(map(len, self._items.values())) > self.max_bytes:
                self._items.popitem(last=False)


class PreviewReader:
    """Reads the preview of an output dataset at a commit, through the cache."""

    def __init__(self, token_file: Path | None, cache: PreviewCache | None = None) -> None:
        self.token_file = token_file
        self.cache = cache or PreviewCache()

    def token(self) -> str | None:
        """The file's token; none (anonymous reads: public outputs only) when the file is
        unset, absent (an optional Secret not created) or empty."""
        if self.token_file is None:
            return None
        try:
            token = self.token_file.read_text().strip()
        except FileNotFoundError:
            return None
        # An HTTP header takes one line of printable ASCII; anything else (a wrong key of
        # the Secret, a certificate) is said without a byte of it.
        if token and not (token.isascii() and token.isprintable()):
            raise BadGateway("the API's Hub token is malformed: check the Secret it comes "
                             "from (api.hubToken)")
        return token or None

    def read(self, repo_id: str, revision: str) -> bytes:
        key = (repo_id, revision)
        data = self.cache.get(key)
        if data is None:
            data = self._download(repo_id, revision)
            self.cache.put(key, data)
        return data

    def _download(self, repo_id: str, revision: str) -> bytes:
        """One GET of the file, no retries: a dashboard or client asking again is the
        retry, and a request handler must not sit through the Hub client's backoff."""
        endpoint = os.environ.get("HF_ENDPOINT", "").rstrip("/") or None
        url = hf_hub_url(repo_id, OUTPUT_PREVIEW_PATH, repo_type="dataset", revision=revision,
                         endpoint=endpoint)
        # False, not None: never the HF_TOKEN variable or a token saved on disk.
        token = self.token()
        headers = build_hf_headers(token=token or False, library_name="augment-api")
        try:
            with get_session().stream("GET", url, headers=headers, follow_redirects=True,
                                      timeout=HUB_TIMEOUT_S) as response:
                hf_raise_for_status(response)
                return _capped_body(response, repo_id)
        except ServiceError:
            raise
        except Exception as err:
            mapped = hub_error(err, repo_id, revision, has_token=token is not None)
            if mapped is None:
                raise
            raise mapped from err


def _capped_body(response: httpx2.Response, repo_id: str) -> bytes:
    body = bytearray()
    for chunk in response.iter_bytes():
        body += chunk
        if len(body) > MAX_PREVIEW_BYTES:
            raise BadGateway(f"the preview of dataset '{repo_id}' is larger than "
                             f"{MAX_PREVIEW_BYTES} bytes")
    return bytes(body)


def hub_error(err: Exception, repo_id: str, revision: str,
              has_token: bool) -> ServiceError | None:
    """The API error for a failed download; None for an error that is not the Hub's."""
    where = f"dataset '{repo_id}' at revision {revision}"
    if isinstance(err, RemoteEntryNotFoundError):
        return NotFound(f"the output {where} has no {OUTPUT_PREVIEW_PATH}")
    if isinstance(err, RepositoryNotFoundError | RevisionNotFoundError | GatedRepoError):
        if not has_token:  # outputs are private by default: say what would let it read
            return NotFound(f"the output {where} is not on the Hub, or is private and the "
                            "API has no Hub token to read it (api.hubToken)")
        return NotFound(f"the output {where} is not on the Hub, or the API's Hub token "
                        "may not read it")
    if isinstance(err, HfHubHTTPError) and err.response.status_code == 401:
        return BadGateway(f"the Hub rejected the API's Hub token (401) reading the preview "
                          f"of {where}: check the Secret it comes from")
    if isinstance(err, HfHubHTTPError):
        return BadGateway(f"the Hub failed to serve the preview of {where} "
                          f"({err.response.status_code})")
    if isinstance(err, httpx2.TransportError):
        log.warning("preview of %s: the Hub is unreachable (%s)", where, type(err).__name__)
        return BadGateway(f"the Hub could not be reached to read the preview of {where}")
    return None
