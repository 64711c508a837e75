"""Fetch the API docs pages' assets (Swagger UI, ReDoc) from the npm registry into
``server/api/static/docs/``, as ``manifest.json`` there pins them, and check their sums.

    python scripts/vendor_docs.py            # fetch the pinned versions, check, write the files
    python scripts/vendor_docs.py --check    # offline: the committed files are the manifest's
    python scripts/vendor_docs.py --record   # after a version bump in the manifest: fetch and
                                             # record the new tarball integrity and file sums

A tarball must match the integrity (sha512) the manifest records, as npm itself checks it;
each file taken from it must match its recorded sha256. ReDoc has no option to leave out its
"API docs by Redocly" footer (a link to redocly.com with a logo loaded from cdn.redoc.ly), so
that one element is cut from ``redoc.standalone.js`` here (``PATCHES``); both the upstream
sum and the served file's are recorded. The server fetches nothing at run time.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import re
import sys
import tarfile
import urllib.request
from pathlib import Path
from typing import Any

FOLDER = Path(__file__).resolve().parents[1] / "server" / "api" / "static" / "docs"
MANIFEST = FOLDER / "manifest.json"
REGISTRY = "https://registry.npmjs.org"
TIMEOUT_S = 60  # why: a 1-2 MB tarball; a stalled registry must fail, not hang

# file → (pattern that must match exactly once upstream, what replaces it); why: ReDoc 2.x
# renders the footer link and its remote logo unconditionally (no option turns it off), and
# its MIT licence allows the change; the pattern names the footer by its link and text, so a
# new version where it changed fails loudly here instead of serving the link again
PATCHES: dict[str, tuple[str, str]] = {
    "redoc.standalone.js": (
        r'\w+\.createElement\(\w+,null,\w+\.createElement\("a",\{target:"_blank",'
        r'rel:"noopener noreferrer",href:"https://redocly\.com/redoc/"\},'
        r'\w+\.createElement\(\w+,null\),"API docs by Redocly"\)\)',
        "null",
    )
}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
        data: bytes = response.read()
        return data


def integrity(data: bytes) -> str:
    """npm's Subresource Integrity string of a tarball."""
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def tarball(name: str, package: dict[str, Any], *, record: bool) -> tarfile.TarFile:
    """The package's tarball, checked against the manifest's integrity (or, with ``record``,
    against what the registry publishes for that version, which is then recorded)."""
    if record:
        dist = json.loads(fetch(f"{REGISTRY}/{name}/{package['version']}"))["dist"]
        package["tarball"], package["integrity"] = dist["tarball"], dist["integrity"]
    data = fetch(package["tarball"])
    if integrity(data) != package["integrity"]:
        raise SystemExit(f"{name}@{package['version']}: the tarball does not match its integrity")
    return tarfile.open(fileobj=io.BytesIO(data), mode="r:gz")


def patched(name: str, data: bytes) -> bytes:
    if name not in PATCHES:
        return data
    pattern, replacement = PATCHES[name]
    text, count = re.subn(pattern, replacement, data.decode())
    if count != 1:
        raise SystemExit(f"{name}: the patch's pattern matched {count} times, not once; look again")
    return text.encode()


def vendor(manifest: dict[str, Any], *, record: bool) -> dict[str, bytes]:
    """Every file of the manifest, from its package's tarball, checked (or recorded)."""
    archives = {n: tarball(n, p, record=record) for n, p in manifest["packages"].items()}
    files: dict[str, bytes] = {}
    for name, entry in manifest["files"].items():
        member = archives[entry["package"]].extractfile(entry["path"])
        if member is None:
            raise SystemExit(f"{name}: {entry['path']} is not a file of {entry['package']}")
        upstream = member.read()
        data = patched(name, upstream)
        if record:
            entry["sha256"] = sha256(data)
            if data != upstream:
                entry["upstream_sha256"] = sha256(upstream)
        sums = {"sha256": sha256(data), "upstream_sha256": sha256(upstream)}
        wrong = [key for key in ("sha256", "upstream_sha256") if key in entry and entry[key] != sums[key]]
        if wrong:
            raise SystemExit(f"{name}: {', '.join(wrong)} differ from the manifest")
        files[name] = data
    return files


def check(manifest: dict[str, Any]) -> list[str]:
    """What is wrong with the committed files: missing, or not the manifest's sum."""
    problems = []
    for name, entry in manifest["files"].items():
        path = FOLDER / name
        if not path.is_file():
            problems.append(f"{name}: missing")
        elif sha256(path.read_bytes()) != entry["sha256"]:
            problems.append(f"{name}: sha256 differs from the manifest")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--check", action="store_true", help="check the committed files, offline")
    group.add_argument("--record", action="store_true", help="record new integrity and sums")
    args = parser.parse_args()
    manifest = json.loads(MANIFEST.read_text())
    if args.check:
        problems = check(manifest)
        print("\n".join(problems) or f"{len(manifest['files'])} files match {MANIFEST.name}")
        return 1 if problems else 0
    files = vendor(manifest, record=args.record)
    for name, data in files.items():
        (FOLDER / name).write_bytes(data)
        print(f"{name}: {len(data)} bytes")
    if args.record:
        MANIFEST.write_text(json.dumps(manifest, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
