"""What the user asked the image to become, checked before anything is written.

Compute refuses an image *type* change (platform ↔ gallery/managed id ↔ VHD URI) and
malformed versions; vmssctl refuses them first, so a bad command changes nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from functools import lru_cache

from vmssctl import inputs
from vmssctl.errors import UsageError
from vmssctl.model import ImageRef

_SEG = r"[A-Za-z0-9_.()-]{1,90}"  # an ARM name segment (ASCII; Compute's names are narrower still)
IMAGE_ID_RE = re.compile(
    rf"/subscriptions/{_SEG}/resourceGroups/{_SEG}/providers/Microsoft\.Compute/"
    rf"(galleries/{_SEG}/images/{_SEG}(/versions/(latest|[0-9]{{1,10}}\.[0-9]{{1,10}}\.[0-9]{{1,10}}))?"
    rf"|images/{_SEG})",
    re.IGNORECASE,
)
URI_RE = re.compile(r"https?://[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?/[A-Za-z0-9._~%/-]{1,1024}\.vhd", re.IGNORECASE)
KIND_NAMES = {"platform": "a platform image", "id": "a gallery or managed image", "uri": "an unmanaged VHD"}


@dataclass(frozen=True)
class ImageChange:
    """The image flags of one command: any of them may be None (= keep)."""

    publisher: str | None = None
    offer: str | None = None
    sku: str | None = None
    version: str | None = None
    image_id: str | None = None
    custom_uri: str | None = None

    @property
    def empty(self) -> bool:
        return not any((self.publisher, self.offer, self.sku, self.version, self.image_id, self.custom_uri))

    def describe(self) -> str:
        """The change in words: 'version 24.04.202611200', 'image /subscriptions/…', for a plan a person reads."""
        if self.image_id:
            return f"image {self.image_id}"
        if self.custom_uri:
            return f"image {self.custom_uri}"
        parts = [f"{k} {v}" for k, v in (("publisher", self.publisher), ("offer", self.offer), ("SKU", self.sku),
                                         ("version", self.version)) if v]
        return ", ".join(parts) or "the latest model"

    def validate(self) -> None:
        platform = any((self.publisher, self.offer, self.sku, self.version))
        if sum((platform, bool(self.image_id), bool(self.custom_uri))) > 1:
            raise UsageError("choose one image kind: --version/--sku/--offer/--publisher, --image-id, or --custom-uri")
        if self.version is not None:
            inputs.version(self.version)
        for flag, value in (("--sku", self.sku), ("--offer", self.offer), ("--publisher", self.publisher)):
            if value is not None:
                inputs.name(value, flag)
        if self.image_id is not None and not IMAGE_ID_RE.fullmatch(self.image_id):
            raise UsageError(f"--image-id '{inputs.shown(self.image_id)}' is not a gallery image (version) or "
                             "managed image resource id")
        version_in_id = IMAGE_ID_RE.fullmatch(self.image_id or "")
        if version_in_id and version_in_id.group(3) and version_in_id.group(3).lower() != "latest":
            inputs.version(version_in_id.group(3), "--image-id version")
        if self.custom_uri is not None and not URI_RE.fullmatch(self.custom_uri):
            raise UsageError(f"--custom-uri '{inputs.shown(self.custom_uri)}' is not an http(s) URL of a .vhd blob")

    def apply(self, current: ImageRef) -> ImageRef:
        """The target image; raises UsageError where Compute would refuse the change."""
        self.validate()
        if self.empty:
            return current
        if self.image_id:
            target = ImageRef(id=self.image_id)
        elif self.custom_uri:
            target = ImageRef(uri=self.custom_uri)
        else:
            target = replace(current, exact_version=None,
                             **{k: v for k, v in (("publisher", self.publisher), ("offer", self.offer),
                                                  ("sku", self.sku), ("version", self.version)) if v})
        if target.kind != current.kind:
            raise UsageError(f"the scale set runs {KIND_NAMES[current.kind]}; Azure does not allow changing it to "
                             f"{KIND_NAMES[target.kind]} in place (create a new scale set instead)")
        return target


@lru_cache(maxsize=4096)  # (asked of every instance every turn, of the same few images)
def same_image(a: ImageRef, b: ImageRef) -> bool:
    """Equal as a model value (exactVersion is read-only and ignored; names compare case-insensitively)."""
    def key(r: ImageRef) -> tuple:
        return tuple((v or "").lower() for v in (r.publisher, r.offer, r.sku, r.version, r.id, r.uri))
    return key(a) == key(b)


@lru_cache(maxsize=4096)
def runs_image(instance_image: ImageRef, wanted: ImageRef) -> bool:
    """Does an instance's applied image match ``wanted`` (a ``latest`` matches any exact version)?"""
    if wanted.kind != instance_image.kind:
        return False
    if wanted.kind != "platform":
        return same_image(instance_image, wanted)
    if (wanted.version or "").lower() == "latest":
        return same_image(replace(instance_image, version="latest"), wanted)
    got = instance_image.exact_version or instance_image.version
    return same_image(replace(instance_image, version=got), wanted)


def diff(current: ImageRef, target: ImageRef) -> list[tuple[str, str | None, str | None]]:
    """(field, from, to) for every image field that changes."""
    out = []
    for name in ("publisher", "offer", "sku", "version", "id", "uri"):
        a, b = getattr(current, name), getattr(target, name)
        if (a or "") != (b or ""):
            out.append((name, a, b))
    return out


def behind(inst_latest_model: bool, inst_image: ImageRef, newest: str | None) -> bool:
    """Does an instance need work: off the latest model, or (model says 'latest') on an older version than
    ``newest``, which only a reimage fixes?"""
    if not inst_latest_model:
        return True
    return newest is not None and inst_image.kind == "platform" and \
        (inst_image.exact_version or inst_image.version) != newest


def wants_latest(image: ImageRef) -> bool:
    return image.kind == "platform" and (image.version or "").lower() == "latest"
