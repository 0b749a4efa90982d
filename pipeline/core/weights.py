"""Official model weights: where they are published, their SHA-256, and a verified, resumable download.

maskloop never downloads anything at run time; ``maskloop models fetch NAME`` is the one explicit way to get
the published weights the pre-annotators, the refinement engines and training can use. :data:`WEIGHTS` is a
registry of :class:`WeightSpec` (official URL, full-file SHA-256, size, the params settings that point at
the file). :func:`fetch_weights` downloads one file:

- into ``<dest>.part`` next to the destination; an existing ``.part`` is **resumed** with an HTTP ``Range``
  request (a server that ignores ``Range`` and answers 200 restarts it from zero); a dropped connection is
  resumed automatically up to ``max_retries`` times, and a later run resumes what is left;
- with a progress bar (rich) when ``progress`` is true;
- verified against the SHA-256 before it becomes visible: only a verified file is renamed (atomically) to
  the destination; a mismatch removes the ``.part`` and raises :class:`ChecksumMismatch` naming the file,
  the URL and both digests;
- an existing destination with the right digest is left alone (``already present``); one with another
  digest is refused unless ``force``.

Example::

    spec = WEIGHTS["sam_vit_b"]
    outcome = fetch_weights(spec, Path("models/sam_vit_b_01ec64.pth"))
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pipeline.core.errors import UserError
from pipeline.core.hashing import sha256_file

log = logging.getLogger(__name__)

CHUNK = 1 << 20
NET_CHUNK = 1 << 16  # bytes per network read: a dropped connection loses at most this much


class WeightsError(UserError):
    """A download that failed: unreachable URL, HTTP error, dropped connection, existing file in the way."""


class ChecksumMismatch(WeightsError):
    """The downloaded bytes do not have the published SHA-256."""


@dataclass(frozen=True)
class WeightSpec:
    """One published weights file.

    ``settings``: dotted params keys that may point at this file, each with the condition that makes it this
    file's setting (``("preannotate.sam.checkpoint", "preannotate.sam.arch", "vit_b")``: the checkpoint
    setting counts when ``preannotate.sam.arch`` is ``vit_b``; an empty condition key means always, when the
    setting is not null).
    """

    name: str
    url: str
    sha256: str
    size: int
    description: str
    settings: tuple[tuple[str, str, str], ...] = ()

    def __post_init__(self) -> None:
        if len(self.sha256) != 64 or any(c not in "0123456789abcdef" for c in self.sha256):
            raise ValueError(f"{self.name}: sha256 must be 64 lowercase hex digits, got {self.sha256!r}")
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"{self.name}: url must be http(s), got {self.url!r}")
        if self.size <= 0:
            raise ValueError(f"{self.name}: size must be positive, got {self.size}")

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


def _sam(arch: str, file: str, sha: str, size: int, what: str) -> WeightSpec:
    return WeightSpec(
        name=f"sam_{arch}", url=f"https://dl.fbaipublicfiles.com/segment_anything/{file}", sha256=sha, size=size,
        description=f"Segment Anything {what} (Meta, Apache-2.0): preannotate sam, refine sam",
        settings=(("preannotate.sam.checkpoint", "preannotate.sam.arch", arch),
                  ("refine.sam.checkpoint", "refine.sam.arch", arch)),
    )


WEIGHTS: dict[str, WeightSpec] = {
    spec.name: spec
    for spec in (
        _sam("vit_b", "sam_vit_b_01ec64.pth", "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
             375_042_383, "ViT-B"),
        _sam("vit_l", "sam_vit_l_0b3195.pth", "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
             1_249_524_607, "ViT-L"),
        _sam("vit_h", "sam_vit_h_4b8939.pth", "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
             2_564_550_879, "ViT-H"),
        WeightSpec(
            name="deeplabv3_resnet50",
            url="https://download.pytorch.org/models/deeplabv3_resnet50_coco-cd0a2569.pth",
            sha256="cd0a25694c4a0f7106b38f4938bf90a874f2f241cc410b8f63c7024399538f06", size=168_312_152,
            description="torchvision DeepLabV3 ResNet-50, COCO with VOC labels (BSD-3): preannotate deeplabv3",
            settings=(("preannotate.deeplabv3.checkpoint", "preannotate.deeplabv3.arch", "resnet50"),),
        ),
        WeightSpec(
            name="deeplabv3_mobilenet_v3_large",
            url="https://download.pytorch.org/models/deeplabv3_mobilenet_v3_large-fc3c493d.pth",
            sha256="fc3c493d68e89cc31ef488c803d5d7dd2f3190fb570598faa49fef69be8e5e70", size=44_356_159,
            description="torchvision DeepLabV3 MobileNetV3-Large, COCO with VOC labels (BSD-3): preannotate deeplabv3",
            settings=(("preannotate.deeplabv3.checkpoint", "preannotate.deeplabv3.arch", "mobilenet_v3_large"),),
        ),
        WeightSpec(
            name="mobilenet_v3_large",
            url="https://download.pytorch.org/models/mobilenet_v3_large-8738ca79.pth",
            sha256="8738ca797c879b547d18bbd15da5736ff2557b2036a9af72225393ca61759a04", size=22_139_423,
            description="torchvision MobileNetV3-Large ImageNet-1K backbone (BSD-3): train.pretrained_backbone",
            settings=(("train.pretrained_backbone", "", ""),),
        ),
    )
}
"""Every file ``maskloop models fetch`` knows, by name."""


def weight_spec(name: str) -> WeightSpec:
    """The registry entry ``name``; a :class:`UserError` listing the names when unknown."""
    try:
        return WEIGHTS[name]
    except KeyError:
        raise UserError(f"unknown weights {name!r}; known: {', '.join(sorted(WEIGHTS))}") from None


# --------------------------------------------------------------------------- destinations (pure)


def _lookup(data: Mapping[str, Any], dotted: str) -> Any:
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


@dataclass(frozen=True)
class Destination:
    """Where a file goes: ``path`` and the params setting that points there (``""`` when none does: the file
    goes to ``paths.models/<official name>`` and the user has to set one)."""

    path: Path
    setting: str


def destinations(spec: WeightSpec, params: Mapping[str, Any], models_dir: Path) -> list[Destination]:
    """The params paths ``spec`` belongs at (deduplicated, in ``spec.settings`` order), or
    ``models_dir/<official file name>`` when no setting of ``params`` (the parsed params.yaml) points at it."""
    out: list[Destination] = []
    seen: set[Path] = set()
    for setting, cond_key, cond_value in spec.settings:
        value = _lookup(params, setting)
        if value in (None, ""):
            continue
        if cond_key and _lookup(params, cond_key) != cond_value:
            continue
        path = Path(str(value))
        if path not in seen:
            seen.add(path)
            out.append(Destination(path, setting))
    return out or [Destination(Path(models_dir) / spec.filename, "")]


# --------------------------------------------------------------------------- hashing


file_sha256 = sha256_file
"""SHA-256 hex digest of a file (:func:`pipeline.core.hashing.sha256_file`)."""


def _hash_prefix(path: Path) -> tuple[Any, int]:
    h = hashlib.sha256()
    n = 0
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
            n += len(block)
    return h, n


# --------------------------------------------------------------------------- download


@dataclass(frozen=True)
class FetchOutcome:
    """What :func:`fetch_weights` did: ``status`` is ``downloaded`` or ``present`` (already there, verified);
    ``resumed_from`` the byte offset a ``.part`` file was resumed at (0 = fresh), ``attempts`` the HTTP
    requests made."""

    path: Path
    status: Literal["downloaded", "present"]
    sha256: str
    bytes: int
    resumed_from: int = 0
    attempts: int = 0


def part_path(dest: Path) -> Path:
    """The partial download next to ``dest`` (``<name>.part``), kept between runs to be resumed."""
    return dest.with_name(dest.name + ".part")


@contextmanager
def _progress(enabled: bool, name: str, total: int, done: int) -> Iterator[Any]:
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  TimeRemainingColumn(), console=Console(stderr=True)) as bar:
        task = bar.add_task(name, total=total or None, completed=done)
        yield lambda n: bar.update(task, advance=n)


def _url_for(spec: WeightSpec, mirror: str) -> str:
    return f"{mirror.rstrip('/')}/{spec.filename}" if mirror else spec.url


def fetch_weights(spec: WeightSpec, dest: Path, *, mirror: str = "", force: bool = False, progress: bool = True,
                  timeout_s: float = 60.0, max_retries: int = 3, backoff_s: float = 1.0) -> FetchOutcome:
    """Download ``spec`` to ``dest`` (resumable, verified, atomic); see the module docstring.

    ``mirror``: a base URL serving the same file names (replaces the official host). Raises
    :class:`WeightsError` (HTTP error, unreachable after ``max_retries`` resumes, ``dest`` holding other bytes
    without ``force``) or :class:`ChecksumMismatch`.
    """
    import requests

    dest = Path(dest)
    url = _url_for(spec, mirror)
    if dest.is_dir():
        raise WeightsError(f"{dest}: is a folder; the {spec.name} weights must go to a file path")
    if dest.is_file():
        digest = file_sha256(dest)
        if digest == spec.sha256:
            log.info("%s: already present and verified (%s)", dest, spec.name)
            return FetchOutcome(dest, "present", digest, dest.stat().st_size)
        if not force:
            raise WeightsError(
                f"{dest}: exists but its SHA-256 is {digest}, not the published {spec.sha256} of {spec.name}; "
                "remove it or re-run with --force to replace it"
            )
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(dest)
    h, have = _hash_prefix(part) if part.is_file() else (hashlib.sha256(), 0)
    resumed_from = have
    if have > spec.size:  # not the prefix of this file: start over
        log.warning("%s: %d bytes, more than the %d of %s; starting over", part, have, spec.size, spec.name)
        part.unlink()
        h, have, resumed_from = hashlib.sha256(), 0, 0
    attempts = 0
    last = ""
    session = requests.Session()
    with _progress(progress, spec.name, spec.size, have) as advance:
        while have < spec.size:
            if attempts > max_retries:
                raise WeightsError(
                    f"{spec.name}: download from {url} failed {attempts} times ({last}); {have} of {spec.size} "
                    f"bytes are kept in {part}: re-run `maskloop models fetch {spec.name}` to resume"
                )
            if attempts:
                time.sleep(backoff_s * 2 ** (attempts - 1))
            attempts += 1
            headers = {"Range": f"bytes={have}-"} if have else {}
            try:
                with session.get(url, headers=headers, stream=True, timeout=timeout_s) as resp:
                    if resp.status_code == 416:  # nothing left to send: verify what we have
                        break
                    if resp.status_code >= 500 or resp.status_code == 429:
                        last = f"HTTP {resp.status_code}"
                        continue
                    if resp.status_code not in (200, 206):
                        raise WeightsError(f"{spec.name}: {url} answered HTTP {resp.status_code} "
                                           f"{resp.reason}; check the URL (or --mirror)")
                    start = _range_start(resp.headers.get("Content-Range", "")) if resp.status_code == 206 else 0
                    if have and start != have:  # Range ignored (200) or another range: the body starts at 0
                        if start:
                            raise WeightsError(f"{spec.name}: {url} answered bytes from {start} to a request "
                                               f"for bytes from {have}; remove {part} and re-run")
                        log.info("%s: the server ignored the resume request; restarting", url)
                        if advance is not None:
                            advance(-have)
                        h, have, resumed_from = hashlib.sha256(), 0, 0
                    mode = "ab" if have else "wb"
                    with open(part, mode) as f:
                        for block in resp.iter_content(NET_CHUNK):
                            f.write(block)
                            h.update(block)
                            have += len(block)
                            if advance is not None:
                                advance(len(block))
                            if have > spec.size:
                                break
                        f.flush()
                        os.fsync(f.fileno())
                    if have > spec.size:
                        break
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
                last = type(exc).__name__
                log.warning("%s: connection lost after %d bytes (%s); resuming", spec.name, have, last)
                continue
    digest = h.hexdigest()
    if digest != spec.sha256 or have != spec.size:
        part.unlink(missing_ok=True)
        raise ChecksumMismatch(
            f"{spec.name}: checksum mismatch for {url}: got {have} bytes with SHA-256 {digest}, expected "
            f"{spec.size} bytes with SHA-256 {spec.sha256}; the download was removed, {dest} is unchanged "
            "(a proxy or mirror served other bytes: re-run, or check --mirror)"
        )
    os.replace(part, dest)
    _fsync_dir(dest.parent)
    log.info("%s: %s verified (%d bytes)", dest, spec.name, have)
    return FetchOutcome(dest, "downloaded", digest, have, resumed_from, attempts)


def _range_start(content_range: str) -> int:
    """Start offset of a ``Content-Range: bytes START-END/TOTAL`` header (0 when absent or unreadable)."""
    unit, _, rest = content_range.strip().partition(" ")
    first = rest.split("-", 1)[0]
    return int(first) if unit == "bytes" and first.isdigit() else 0


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def install_copy(src: Path, dest: Path, spec: WeightSpec, force: bool = False) -> FetchOutcome:
    """Put a verified ``src`` at a second destination ``dest`` (hard link, else an atomic copy)."""
    import shutil

    dest = Path(dest)
    if dest.is_file():
        digest = file_sha256(dest)
        if digest == spec.sha256:
            return FetchOutcome(dest, "present", digest, dest.stat().st_size)
        if not force:
            raise WeightsError(f"{dest}: exists but its SHA-256 is {digest}, not the published {spec.sha256} of "
                               f"{spec.name}; remove it or re-run with --force")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = part_path(dest)
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dest)
    return FetchOutcome(dest, "downloaded", spec.sha256, dest.stat().st_size)
