"""The Google Cloud Storage backend: objects under ``gs://BUCKET/PREFIX``.

Credentials are found the usual way (Application Default Credentials: ``gcloud auth
application-default login`` on a laptop, Workload Identity on GKE); ``STORAGE_EMULATOR_HOST``
points the client at an emulator (the tests use fake-gcs-server). Preconditions make the
operations atomic: ``if_generation_match=0`` creates only if absent, ``if_generation_match=<gen>``
replaces only an unchanged object. Transient errors are retried by the client's retry policy;
conditional writes are retried too, because the precondition makes them safe to repeat.
"""

from __future__ import annotations

from storage.base import (
    AlreadyExists,
    GenerationMismatch,
    ObjectInfo,
    ObjectNotFound,
    StorageError,
    check_relative,
    join,
)

CREDENTIALS_HELP = (
    "no Google Cloud credentials found: run `gcloud auth application-default login`, set "
    "GOOGLE_APPLICATION_CREDENTIALS, or use Workload Identity on GKE"
)


def parse_gcs_uri(uri: str) -> tuple[str, str]:
    """``gs://bucket/some/prefix`` -> ``("bucket", "some/prefix")``."""
    rest = uri[len("gs://"):]
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise StorageError(f"{uri}: a gs:// URI needs a bucket name (gs://BUCKET/PREFIX)")
    return bucket, prefix.strip("/")


class GCSStorage:
    """Objects under a prefix of a Google Cloud Storage bucket."""

    def __init__(self, uri: str, client=None):
        from google.api_core import exceptions as api_exceptions
        from google.auth import exceptions as auth_exceptions
        from google.cloud import storage as gcs
        from google.cloud.storage.retry import DEFAULT_RETRY, DEFAULT_RETRY_IF_GENERATION_SPECIFIED

        self.uri = uri.rstrip("/")
        self.bucket_name, self.prefix = parse_gcs_uri(uri)
        self._errors = api_exceptions
        # A token that cannot be had (Workload Identity's metadata server failing, a revoked login)
        # is google.auth's error, not the API's: both are this backend's failures.
        self._auth_errors = auth_exceptions
        self._failures = (api_exceptions.GoogleAPIError, auth_exceptions.GoogleAuthError)
        self._retry, self._conditional_retry = DEFAULT_RETRY, DEFAULT_RETRY_IF_GENERATION_SPECIFIED
        try:
            self.client = client or gcs.Client()
        except auth_exceptions.DefaultCredentialsError as exc:
            raise StorageError(f"{uri}: {CREDENTIALS_HELP}") from exc
        self.bucket = self.client.bucket(self.bucket_name)

    def describe(self, relative: str) -> str:
        return f"{self.uri}/{relative}"

    def _name(self, relative: str) -> str:
        return join(self.prefix, check_relative(relative))

    def _relative(self, name: str) -> str:
        return name[len(self.prefix) + 1:] if self.prefix else name

    def _failure(self, exc: Exception, what: str) -> StorageError:
        """A StorageError that names the operation and the object, for an unexpected API error."""
        if isinstance(exc, self._errors.NotFound) and "bucket" in str(exc).lower():
            return StorageError(f"{what}: bucket gs://{self.bucket_name} does not exist")
        if isinstance(exc, self._auth_errors.GoogleAuthError):
            return StorageError(f"{what}: the Google Cloud credentials failed ({type(exc).__name__}: {exc})")
        if isinstance(exc, self._errors.Forbidden):
            return StorageError(f"{what}: permission denied ({exc.message})")
        cause = getattr(exc, "cause", None)  # a RetryError carries the last error it retried
        detail = f"{getattr(exc, 'message', exc)}" + (f" (last error: {type(cause).__name__}: {cause})" if cause else "")
        return StorageError(f"{what}: {type(exc).__name__}: {detail}")

    def exists(self, relative: str) -> bool:
        try:
            return self.bucket.blob(self._name(relative)).exists(retry=self._retry)
        except self._failures as exc:
            raise self._failure(exc, f"cannot look up {self.describe(relative)}") from exc

    def read_with_generation(self, relative: str) -> tuple[bytes, str]:
        """The content and the generation it was read at (one consistent read)."""
        blob = self.bucket.blob(self._name(relative))
        try:
            data = blob.download_as_bytes(retry=self._retry)
        except self._errors.NotFound as exc:
            raise ObjectNotFound(f"{self.describe(relative)} does not exist") from exc
        except self._failures as exc:
            raise self._failure(exc, f"cannot read {self.describe(relative)}") from exc
        return data, str(blob.generation)

    def read(self, relative: str) -> bytes:
        return self.read_with_generation(relative)[0]

    def find(self, prefix: str, filename: str) -> list[str]:
        """Names of the folders directly under ``prefix`` that hold an object ``filename``.

        One listing filtered by the server (``match_glob``), however many folders there are. The
        names are checked here too: fake-gcs-server, which the tests use, ignores ``match_glob``.
        """
        base = join(self.prefix, prefix)
        base = base + "/" if base else ""
        try:
            blobs = self.client.list_blobs(self.bucket_name, prefix=base, match_glob=f"{base}*/{filename}",
                                           retry=self._retry)
            parts = (blob.name[len(base):].split("/") for blob in blobs)
            return sorted(part[0] for part in parts if len(part) == 2 and part[1] == filename)
        except self._failures as exc:
            raise self._failure(exc, f"cannot list {self.describe(prefix)}") from exc

    def list(self, prefix: str = "") -> tuple[list[str], list[str]]:
        """Names of the objects and sub-prefixes directly under ``prefix`` (a delimiter listing)."""
        base = join(self.prefix, prefix)
        base = base + "/" if base else ""
        try:
            pages = self.client.list_blobs(self.bucket_name, prefix=base, delimiter="/", retry=self._retry)
            files = [blob.name[len(base):] for blob in pages]
            folders = [name[len(base):].rstrip("/") for name in pages.prefixes]
        except self._failures as exc:
            raise self._failure(exc, f"cannot list {self.describe(prefix)}") from exc
        return sorted(name for name in files if name), sorted(folders)

    def walk(self, prefix: str = "") -> list[ObjectInfo]:
        """Every object under ``prefix``, sorted by path; one listing, paged by the client."""
        base = join(self.prefix, prefix)
        base = base + "/" if base else ""
        try:
            blobs = list(self.client.list_blobs(self.bucket_name, prefix=base, retry=self._retry))
        except self._failures as exc:
            raise self._failure(exc, f"cannot list {self.describe(prefix)}") from exc
        return sorted(
            (ObjectInfo(self._relative(b.name), int(b.size or 0), str(b.generation), b.md5_hash,
                        b.updated.timestamp() if b.updated else 0.0)
             for b in blobs if not b.name.endswith("/")),
            key=lambda info: info.path,
        )

    def write(self, relative: str, data: bytes) -> None:
        """Write unconditionally (an upload is atomic: readers see the old or the new object)."""
        try:
            self.bucket.blob(self._name(relative)).upload_from_string(data, retry=self._retry)
        except self._failures as exc:
            raise self._failure(exc, f"cannot write {self.describe(relative)}") from exc

    def _own_generation(self, relative: str, data: bytes) -> str | None:
        """After a refused retry: the object's generation when it was our own earlier attempt that
        got through (it holds ``data``), else None.

        Sound only because every conditional write in this project carries a unique id (a claim
        id, a lease token, an audit name), so no other writer ever writes the same bytes.
        """
        try:
            stored, generation = self.read_with_generation(relative)
        except ObjectNotFound:
            return None
        return generation if stored == data else None

    def create(self, relative: str, data: bytes, deadline_s: float | None = None) -> str:
        """Write only if absent (``if_generation_match=0``; AlreadyExists otherwise); return its generation.

        ``deadline_s`` bounds the retries (a write that must land while a lease is still held)."""
        return self._upload_if(relative, data, 0, AlreadyExists(f"{self.describe(relative)} already exists"),
                               deadline_s)

    def replace(self, relative: str, data: bytes, if_generation: str, deadline_s: float | None = None) -> str:
        """Write only if the object still has ``if_generation``; return the new generation."""
        return self._upload_if(relative, data, int(if_generation),
                               GenerationMismatch(f"{self.describe(relative)} changed since it was read"), deadline_s)

    def _upload_if(self, relative: str, data: bytes, generation: int, refused: StorageError,
                   deadline_s: float | None = None) -> str:
        """Upload with ``if_generation_match=generation``; raise ``refused`` when the server refuses."""
        blob = self.bucket.blob(self._name(relative))
        if deadline_s is None:
            retry, timeout = self._conditional_retry, 60
        else:
            # The precondition makes the retries safe; the deadline makes them end in time.
            retry, timeout = self._retry.with_timeout(max(deadline_s, 0.1)), max(min(60, deadline_s), 0.1)
        try:
            blob.upload_from_string(data, if_generation_match=generation, retry=retry, timeout=timeout)
        except self._errors.PreconditionFailed as exc:
            # A retried upload whose first attempt landed is refused too; that one is ours.
            generation = self._own_generation(relative, data)
            if generation is not None:
                return generation
            raise refused from exc
        except self._failures as exc:
            raise self._failure(exc, f"cannot write {self.describe(relative)}") from exc
        return str(blob.generation)

    def copy(self, source: str, target: str) -> None:
        """Server-side copy (no download); create-only at the target.

        fake-gcs-server, which the tests use, ignores preconditions on copies, so there a copy
        over an existing object succeeds; the registry never relies on this refusal alone (it
        copies into a fresh folder and commits with a create-only metadata.json).
        """
        source_blob = self.bucket.blob(self._name(source))
        try:
            self.bucket.copy_blob(source_blob, self.bucket, self._name(target), if_generation_match=0,
                                  retry=self._conditional_retry)
        except self._errors.PreconditionFailed as exc:
            # A retried copy whose first attempt landed is refused too; that one is ours when the
            # target holds the source's content.
            if self._same_content(source, target):
                return
            raise AlreadyExists(f"{self.describe(target)} already exists") from exc
        except self._errors.NotFound as exc:
            raise ObjectNotFound(f"{self.describe(source)} does not exist") from exc
        except self._failures as exc:
            raise self._failure(exc, f"cannot copy {self.describe(source)}") from exc

    def _same_content(self, source: str, target: str) -> bool:
        """True when both objects exist and their checksums (crc32c and md5, as GCS keeps them) agree."""
        try:
            blobs = [self.bucket.get_blob(self._name(path), retry=self._retry) for path in (source, target)]
        except self._failures:
            return False
        if any(blob is None for blob in blobs):
            return False
        first, second = blobs
        sums = [(blob.crc32c, blob.md5_hash) for blob in blobs]
        return first.size == second.size and sums[0] == sums[1] and any(sums[0])

    def delete(self, relative: str) -> None:
        """Delete one object; a missing one is not an error."""
        try:
            self.bucket.blob(self._name(relative)).delete(retry=self._retry)
        except self._errors.NotFound:
            return
        except self._failures as exc:
            raise self._failure(exc, f"cannot delete {self.describe(relative)}") from exc

