"""Image references as Compute sees them: platform, gallery/managed id, or legacy VHD URI.

Compute refuses to switch a scale set between these kinds in place, and resolves a
platform ``latest`` to an ``exactVersion``; both rules live here.
"""

from __future__ import annotations

import re

from vmssctl import inputs
from vmssctl.emulator.errors import ArmError, invalid
from vmssctl.emulator.resources.fields import region

_SEG = r"[\x21-\x2e\x30-\x7e]{1,90}"  # printable ASCII but '/', bounded (the spec's examples use {placeholders})
_ID_RE = re.compile(
    rf"/subscriptions/{_SEG}/resourceGroups/{_SEG}/providers/Microsoft\.Compute/"
    rf"(galleries/{_SEG}/images/{_SEG}(/versions/{_SEG})?|images/{_SEG})",
    re.IGNORECASE,
)
_SHARED_RE = re.compile(rf"/(SharedGalleries|CommunityGalleries)/{_SEG}/Images/{_SEG}(/Versions/{_SEG})?", re.I)
_URI_RE = re.compile(r"https?://[\x21-\x2e\x30-\x7e]{1,253}/[\x21-\x7e]{1,1024}", re.IGNORECASE)


def is_version(value: object) -> bool:
    """Major.Minor.Build in ASCII digits, each part a 32-bit integer (what Compute accepts)."""
    try:
        return isinstance(value, str) and inputs.version(value) != "latest"
    except inputs.UsageError:
        return False

PLATFORM, GALLERY_ID, URI = "platform", "id", "uri"
_KIND_NAMES = {PLATFORM: "a platform image", GALLERY_ID: "a gallery or managed image", URI: "an unmanaged VHD"}


def kind_of(storage_profile: dict) -> str | None:
    ref = storage_profile.get("imageReference") or {}
    if any(ref.get(k) for k in ("id", "sharedGalleryImageId", "communityGalleryImageId")):
        return GALLERY_ID
    if any(ref.get(k) for k in ("publisher", "offer", "sku", "version")):
        return PLATFORM
    if ((storage_profile.get("osDisk") or {}).get("image") or {}).get("uri"):
        return URI
    return None


def validate(storage_profile: dict) -> None:
    """Reject what Compute would reject, with the target Compute would name."""
    kind = kind_of(storage_profile)
    ref = storage_profile.get("imageReference") or {}
    if kind is None:
        raise invalid(
            "The storage profile must specify an image: imageReference or osDisk.image.uri.",
            "virtualMachineProfile.storageProfile.imageReference",
        )
    if kind == PLATFORM:
        for key in ("publisher", "offer", "sku", "version"):
            value = ref.get(key)
            if not isinstance(value, str) or not value.strip():
                raise invalid(
                    f"Required parameter 'imageReference.{key}' is missing (null).",
                    f"virtualMachineProfile.storageProfile.imageReference.{key}",
                )
            if key != "version" and not inputs.is_scale_set_name(value):
                raise invalid(f"The value '{inputs.shown(value)}' of parameter 'imageReference.{key}' is invalid.",
                              f"virtualMachineProfile.storageProfile.imageReference.{key}")
        version = ref["version"]
        if version.lower() != "latest" and not is_version(version):
            raise invalid(
                f"The value '{version}' of parameter 'imageReference.version' is invalid: "
                "use 'latest' or Major.Minor.Build (e.g. 22.04.202611200).",
                "virtualMachineProfile.storageProfile.imageReference.version",
            )
    elif kind == GALLERY_ID:
        value = ref.get("id") or ref.get("sharedGalleryImageId") or ref.get("communityGalleryImageId")
        if not isinstance(value, str) or not (_ID_RE.fullmatch(value) or _SHARED_RE.fullmatch(value)):
            raise invalid(
                f"The value '{value}' of parameter 'imageReference.id' is not a valid gallery image, "
                "gallery image version or managed image resource id.",
                "virtualMachineProfile.storageProfile.imageReference.id",
            )
    else:
        uri = storage_profile["osDisk"]["image"]["uri"]
        if not isinstance(uri, str) or not _URI_RE.fullmatch(uri):
            raise invalid(
                f"The value '{uri}' of parameter 'osDisk.image.uri' is not a valid blob URI.",
                "virtualMachineProfile.storageProfile.osDisk.image.uri",
            )


def check_kind_change(old: dict, new: dict) -> None:
    a, b = kind_of(old), kind_of(new)
    if a and b and a != b:
        raise ArmError(
            400,
            "PropertyChangeNotAllowed",
            f"Changing property 'imageReference' from {_KIND_NAMES[a]} to {_KIND_NAMES[b]} is not allowed. "
            "Create a new scale set to change the image type.",
            "virtualMachineProfile.storageProfile.imageReference",
        )


def _version_key(v: str) -> tuple[int, ...]:
    return tuple(int(p) for p in v.split("."))


class Catalog:
    """Published platform image versions, so ``latest`` resolves the way Compute does, and (``strict``) a model
    naming a version that is not published in its region is refused as Compute refuses it.

    ``strict`` (what ``vmssctl emulator`` serves): only published versions exist; a version may be published in
    some regions only (the admin API's ``locations``). Open (the tests' emulators and an in-process world by
    default): any well-formed version a client names is taken as published everywhere. Either way ``latest``
    picks the highest published one of the SKU in the region, and a SKU never seen starts at 1.0.0 when open.
    """

    DEFAULT = {("canonical", "ubuntu-24_04-lts", "server"): ["24.04.202610010"]}

    FIRST_VERSION = "1.0.0"  # what 'latest' of a SKU nobody has published yet resolves to (open)
    REGIONS = "@regions"  # the dump's key for versions published in some regions only

    def __init__(self, versions: dict | None = None, strict: bool = False) -> None:
        self.strict = strict
        self._versions: dict[tuple[str, str, str], set[str]] = {
            k: set(v) for k, v in self.DEFAULT.items()
        }
        # (publisher, offer, sku, version) -> the regions it is published in (absent: every region)
        self._regions: dict[tuple[str, str, str, str], set[str]] = {}
        versions = dict(versions or {})
        for key, where in (versions.pop(self.REGIONS, None) or {}).items():
            publisher, offer, sku, version = key.split("|")
            self._regions[(publisher, offer, sku, version)] = set(where)
        for key, vs in versions.items():
            publisher, offer, sku = key.split("|")
            self._versions.setdefault((publisher, offer, sku), set()).update(vs)

    def publish(self, publisher: str, offer: str, sku: str, version: str, locations: list[str] | None = None) -> None:
        if not is_version(version) or not all(inputs.is_scale_set_name(n) for n in (publisher, offer, sku)):
            raise invalid(f"'{inputs.shown(version)}' is not Major.Minor.Build, or a name is invalid.", "version")
        key = (publisher.lower(), offer.lower(), sku.lower())
        self._versions.setdefault(key, set()).add(version)
        if locations is not None:
            self._regions.setdefault((*key, version), set()).update(region(x) for x in locations)
        else:
            self._regions.pop((*key, version), None)

    def available(self, publisher: str, offer: str, sku: str, version: str, location: str | None) -> bool:
        """Is this exact version published (in ``location``, when given)?"""
        key = (publisher.lower(), offer.lower(), sku.lower())
        if version not in self._versions.get(key, set()):
            return not self.strict and is_version(version)
        where = self._regions.get((*key, version))
        return where is None or location is None or region(location) in where

    def resolve(self, ref: dict, location: str | None = None) -> str:
        key = (ref["publisher"].lower(), ref["offer"].lower(), ref["sku"].lower())
        version = ref["version"]
        if version.lower() != "latest":
            if not self.available(*key, version, location):
                raise not_published(ref, location)
            self._versions.setdefault(key, set()).add(version)
            return version
        known = self._versions.get(key) or (set() if self.strict else {self.FIRST_VERSION})
        here = [v for v in known if self.available(*key, v, location)]
        if not here:
            raise not_published(ref, location)
        self._versions.setdefault(key, set()).update(known)
        return max(here, key=_version_key)

    def versions(self, publisher: str, offer: str, sku: str, location: str | None = None) -> list[str]:
        """Published versions (in ``location``, when given), oldest first; open, a SKU nobody has named yet has
        only the first version."""
        key = (publisher.lower(), offer.lower(), sku.lower())
        known = self._versions.get(key) or (set() if self.strict else {self.FIRST_VERSION})
        return sorted((v for v in known if self.available(*key, v, location)), key=_version_key)

    def dump(self) -> dict:
        out: dict = {"|".join(k): sorted(v, key=_version_key) for k, v in self._versions.items()}
        if self._regions:
            out[self.REGIONS] = {"|".join(k): sorted(v) for k, v in self._regions.items()}
        return out


def not_published(ref: dict, location: str | None) -> ArmError:
    """Compute's refusal of a model naming a platform image version it does not have (in that region)."""
    urn = ":".join(str(ref.get(k, "")) for k in ("publisher", "offer", "sku", "version"))
    return ArmError(404, "PlatformImageNotFound", f"The platform image '{urn}' is not available"
                    + (f" in {location}" if location else "") + ". Verify that all fields in the storage profile "
                    "are correct. For more details about storage profile information, please refer to "
                    "https://aka.ms/storageprofile", "imageReference")
