"""Weight files from a model hub laid out like Hugging Face (``BASE/REPO/resolve/REVISION/FILENAME``).

Files are cached under ``HubConfig.cache_dir/hub/<repo with '/' as '--'>/<revision>/<filename>``; a cached
file is used without any network access. Downloads stream into a temporary file beside the target, show a
progress bar, check the announced length and are moved into place atomically, so an interrupted download
never leaves a truncated file in the cache. Offline with nothing cached raises
:class:`WeightsUnavailableError` naming the URL to fetch and the path to put it at.

Nothing here runs at import time; only stdlib networking (``urllib``) is used.
"""

from __future__ import annotations

import http.client
import logging
import os
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from engines.errors import WeightsUnavailableError

log = logging.getLogger(__name__)

DEFAULT_HUB_URL = "https://huggingface.co"
ENV_HUB_URL = "DEPTHSLAM_HUB_URL"
"""Environment variable: base URL of the hub (a mirror, or a local server in tests)."""
ENV_CACHE_DIR = "DEPTHSLAM_CACHE_DIR"
"""Environment variable: cache directory for weights, ONNX exports and TensorRT engines."""
ENV_OFFLINE = "DEPTHSLAM_OFFLINE"
"""Environment variable: ``1``/``true``/``yes`` forbids network access (cached files only)."""

_CHUNK_BYTES = 1 << 20


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/depthslam`` or ``~/.cache/depthslam``."""
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base else Path.home() / ".cache") / "depthslam"


@dataclass(frozen=True)
class HubConfig:
    """Where weights come from and where they are kept."""

    base_url: str = DEFAULT_HUB_URL
    """Hub base URL; files are fetched from ``{base_url}/{repo}/resolve/{revision}/{filename}``."""
    cache_dir: Path = field(default_factory=default_cache_dir)
    """Cache root: ``hub/`` (downloads), ``exports/`` (ONNX exported here), ``tensorrt/`` (engines)."""
    offline: bool = False
    """Never touch the network; only cached or local files are used."""
    timeout_s: float = 30.0
    """Socket timeout for one network operation (connect or read), seconds."""

    def __post_init__(self) -> None:
        scheme = urllib.parse.urlsplit(self.base_url).scheme
        if scheme not in ("http", "https"):
            raise ValueError(f"HubConfig.base_url must be an http(s) URL, got {self.base_url!r}")
        if not isinstance(self.cache_dir, Path):
            raise ValueError(f"HubConfig.cache_dir must be a pathlib.Path, got {type(self.cache_dir).__name__}")
        if not self.timeout_s > 0:
            raise ValueError(f"HubConfig.timeout_s must be positive, got {self.timeout_s}")

    @staticmethod
    def from_env(environ: Mapping[str, str] | None = None) -> HubConfig:
        """Defaults overridden by ``DEPTHSLAM_HUB_URL``, ``DEPTHSLAM_CACHE_DIR`` and ``DEPTHSLAM_OFFLINE``."""
        env = os.environ if environ is None else environ
        offline_text = env.get(ENV_OFFLINE, "").strip().lower()
        if offline_text not in ("", "0", "1", "true", "false", "yes", "no"):
            raise ValueError(f"{ENV_OFFLINE} must be 0/1/true/false/yes/no, got {offline_text!r}")
        cache = env.get(ENV_CACHE_DIR)
        return HubConfig(
            base_url=env.get(ENV_HUB_URL) or DEFAULT_HUB_URL,
            cache_dir=Path(cache).expanduser() if cache else default_cache_dir(),
            offline=offline_text in ("1", "true", "yes"),
        )


@dataclass(frozen=True)
class HubFile:
    """One file of a hub repository."""

    repo: str
    """Repository id, ``owner/name``."""
    filename: str
    """Path inside the repository, e.g. ``model.safetensors`` or ``onnx/model.onnx``."""
    revision: str = "main"
    """Branch, tag or commit."""

    def __post_init__(self) -> None:
        parts = self.repo.split("/")
        if len(parts) != 2 or not all(parts) or any(p in (".", "..") for p in parts):
            raise ValueError(f"hub repo must look like 'owner/name', got {self.repo!r}")
        name_parts = self.filename.split("/")
        if not self.filename or any(p in ("", ".", "..") for p in name_parts) or self.filename.startswith("/"):
            raise ValueError(f"hub filename must be a relative path without '..', got {self.filename!r}")
        if not self.revision or "/" in self.revision or self.revision in (".", ".."):
            raise ValueError(f"hub revision must be a branch, tag or commit name, got {self.revision!r}")

    def url(self, config: HubConfig) -> str:
        """Download URL of this file on the configured hub."""
        return "/".join((
            config.base_url.rstrip("/"), self.repo, "resolve",
            urllib.parse.quote(self.revision, safe=""), urllib.parse.quote(self.filename),
        ))

    def cached_path(self, config: HubConfig) -> Path:
        """Where this file lives in the cache (whether or not it is there yet)."""
        return config.cache_dir / "hub" / self.repo.replace("/", "--") / self.revision / self.filename

    def describe(self) -> str:
        return f"{self.repo}/{self.filename} (revision {self.revision})"


@dataclass(frozen=True)
class FetchResult:
    """A file that is now on disk."""

    path: Path
    """Local path of the file (in the cache)."""
    downloaded: bool
    """True when this call downloaded it, False for a cache hit."""
    size_bytes: int
    """File size in bytes."""


class ProgressBar:
    """A one-line text progress bar for downloads, redrawn at most every ``min_interval_s`` seconds."""

    def __init__(self, stream: TextIO, label: str, total_bytes: int | None, min_interval_s: float = 0.25) -> None:
        self._stream = stream
        self._label = label
        self._total = total_bytes
        self._done = 0
        self._start = time.monotonic()
        self._last_draw = -1.0
        self._min_interval_s = min_interval_s

    def update(self, n_bytes: int) -> None:
        self._done += n_bytes
        now = time.monotonic()
        if now - self._last_draw >= self._min_interval_s:
            self._last_draw = now
            self._draw(now, final=False)

    def close(self) -> None:
        self._draw(time.monotonic(), final=True)

    def _draw(self, now: float, *, final: bool) -> None:
        mb = self._done / 1e6
        rate = mb / max(now - self._start, 1e-6)
        if self._total:
            pct = 100.0 * self._done / self._total
            filled = int(30 * min(self._done, self._total) / self._total)
            text = (f"{self._label}: [{'#' * filled}{'.' * (30 - filled)}] {pct:5.1f}% "
                    f"{mb:.1f}/{self._total / 1e6:.1f} MB {rate:.1f} MB/s")
        else:
            text = f"{self._label}: {mb:.1f} MB {rate:.1f} MB/s"
        self._stream.write("\r" + text + ("\n" if final else ""))
        self._stream.flush()


def offline_message(file: HubFile, config: HubConfig, why: str) -> str:
    """The text of the error raised when a file is needed but cannot be fetched."""
    return (
        f"{file.describe()} is not in the cache and cannot be fetched ({why}).\n"
        f"  Fetch: {file.url(config)}\n"
        f"  and put it at: {file.cached_path(config)}\n"
        f"  or pass a local weights file (--weights PATH: .onnx, .safetensors or .pth); "
        f"{ENV_HUB_URL} selects another hub or mirror, {ENV_CACHE_DIR} another cache directory."
    )


def fetch(
    file: HubFile, config: HubConfig, *, progress: TextIO | None = sys.stderr, notice: str | None = None,
) -> FetchResult:
    """Return the cached file, downloading it first when it is missing.

    ``notice`` (e.g. the model's licence) is written to ``progress`` before a download starts, so it is
    shown on first fetch only. ``progress=None`` downloads silently. Raises
    :class:`WeightsUnavailableError` when offline, unreachable, or the hub does not have the file.
    """
    target = file.cached_path(config)
    if target.is_file():
        return FetchResult(target, downloaded=False, size_bytes=target.stat().st_size)
    if config.offline:
        raise WeightsUnavailableError(offline_message(file, config, "offline mode"))
    url = file.url(config)
    if notice and progress is not None:
        progress.write(notice.rstrip("\n") + "\n")
        progress.flush()
    log.info("downloading %s from %s", file.describe(), url)
    target.parent.mkdir(parents=True, exist_ok=True)
    request = urllib.request.Request(url, headers={"User-Agent": "depthslam"})
    tmp_name: str | None = None
    try:
        with urllib.request.urlopen(request, timeout=config.timeout_s) as response:
            length_text = response.headers.get("Content-Length")
            total = int(length_text) if length_text and length_text.isdigit() else None
            bar = None if progress is None else ProgressBar(progress, file.filename, total)
            with tempfile.NamedTemporaryFile(
                dir=target.parent, prefix=target.name + ".", suffix=".part", delete=False
            ) as out:
                tmp_name = out.name
                received = 0
                while chunk := response.read(_CHUNK_BYTES):
                    out.write(chunk)
                    received += len(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
            if bar is not None:
                bar.close()
        if total is not None and received != total:
            raise WeightsUnavailableError(
                offline_message(file, config, f"download truncated: got {received} of {total} bytes")
            )
        os.replace(tmp_name, target)
        tmp_name = None
    except urllib.error.HTTPError as exc:
        raise WeightsUnavailableError(
            offline_message(file, config, f"the hub answered HTTP {exc.code} {exc.reason} for {url}")
        ) from exc
    except (urllib.error.URLError, http.client.HTTPException, TimeoutError, ConnectionError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise WeightsUnavailableError(offline_message(file, config, f"network error: {reason}")) from exc
    finally:
        if tmp_name is not None:
            Path(tmp_name).unlink(missing_ok=True)
    return FetchResult(target, downloaded=True, size_bytes=target.stat().st_size)
