"""The classic docker-registry's keys that Portside has no key of its own for.

An operator's copy of the classic `config_sample.yml` must load as it is. So, in the flavor
being loaded, before validation:

- keys of features Portside does differently or not at all are dropped, with one warning each,
  and only when the value would have done something there (a null `bugsnag` is silent);
- aliases become Portside's keys: `boto_bucket` is `s3_bucket`, `boto_calling_format` is
  `s3_path_style`, `s3_use_sigv4` is what boto3 always does;
- a storage driver Portside lacks (gcs, swift, ...) is an error naming the ones it has, so that
  flavors of the file which nobody selects never get in the way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

# Drivers the classic registry (or its plugins) had and Portside has not.
MISSING_DRIVERS: Final = frozenset(
    {"gcs", "swift", "glance", "azureblob", "elliptics", "oss", "alioss"}
)
SUPPORTED_DRIVERS: Final = ("local", "s3")

_PATH_STYLE: Final = {
    "ordinarycallingformat": True,
    "protocolindependentordinarycallingformat": True,
    "subdomaincallingformat": False,
    "vhostcallingformat": False,
}


def _set(value: object) -> bool:
    return value is not None and value != "" and value != {}


def _not_standalone(section: Mapping[str, Any]) -> bool:
    return section.get("standalone") is False


def _any_set(*names: str) -> Callable[[object], bool]:
    def check(value: object) -> bool:
        return isinstance(value, dict) and any(_set(value.get(name)) for name in names)

    return check


# key -> (whether its value had an effect in the classic registry, what it did and why not here)
_RETIRED: Final[dict[str, tuple[Callable[[object], bool], str]]] = {
    "standalone": (
        lambda value: value is False,
        "standalone: false made the classic registry ask a central v1 index (index_endpoint) "
        "for authorization; Portside authorizes requests itself (the auth section)",
    ),
    "privileged_key": (
        _set,
        "privileged_key verified requests signed by the central v1 index; Portside has no "
        "index and authorizes requests itself (the auth section)",
    ),
    "cache": (
        _any_set("host"),
        "cache kept tags and small files in redis; Portside's metadata database answers those "
        "queries itself, so it needs no cache",
    ),
    "cache_lru": (
        _any_set("host"),
        "cache_lru kept small files from remote storage in redis; Portside's metadata database "
        "holds what those files held, so it needs no cache",
    ),
    "bugsnag": (
        _set,
        "bugsnag sent exceptions to Bugsnag; Portside logs them, and mails them with "
        "email_exceptions",
    ),
    "boto_debug": (
        lambda value: _set(value) and value not in (0, False),
        "boto_debug made boto log its requests; Portside's S3 client logs at debug level "
        "with loglevel: debug",
    ),
    "cloudfront": (
        _any_set("base"),
        "cloudfront redirected blob downloads to signed CloudFront URLs; Portside does not "
        "sign CloudFront URLs: storage_redirect redirects to presigned S3 URLs instead",
    ),
}
# Keys that had an effect only when the registry was not standalone.
_INDEX_KEYS: Final = {
    "index_endpoint": "index_endpoint named the central v1 index a registry that was not "
    "standalone asked; Portside has no index",
    "disable_token_auth": "disable_token_auth turned off the v1 index's tokens for a registry "
    "that was not standalone; Portside has no index (its own tokens are the auth section's)",
}
# Keys that only a driver Portside lacks read: in another flavor they did nothing.
_SILENT: Final = frozenset({"storage_alternate"})

ACCEPTED: Final = frozenset(
    {*_RETIRED, *_INDEX_KEYS, *_SILENT, "boto_bucket", "boto_calling_format", "s3_use_sigv4"}
)


class UnsupportedStorage(ValueError):
    """The flavor selects a classic storage driver that Portside does not have."""


def translate(
    section: Mapping[str, Any], warnings: list[str], problems: list[str]
) -> dict[str, Any]:
    """The flavor's resolved keys with the classic-only ones dropped or renamed; appends a line
    to `warnings` per key dropped that had an effect, and to `problems` per contradiction.

    Raises UnsupportedStorage for a storage driver Portside lacks."""
    storage = section.get("storage")
    if isinstance(storage, str) and storage.lower() in MISSING_DRIVERS:
        raise UnsupportedStorage(
            f"key storage: {storage!r} is a storage driver of the classic docker-registry that "
            f"Portside does not have; Portside stores blobs with: {', '.join(SUPPORTED_DRIVERS)}"
        )
    values = {key: value for key, value in section.items() if key not in ACCEPTED}
    for key, (effective, why) in _RETIRED.items():
        if effective(section.get(key)):
            warnings.append(f"{key} is ignored: {why}")
    for key, why in _INDEX_KEYS.items():
        if _set(section.get(key)) and _not_standalone(section):
            warnings.append(f"{key} is ignored: {why}")
    mirroring = section.get("mirroring")
    if isinstance(mirroring, dict) and _set(mirroring.get("source_index")):
        warnings.append(
            "mirroring.source_index is ignored: the classic registry read v1 image lists from "
            "that index; Portside pulls through the v2 API of mirroring.source, which has none"
        )
    _bucket(section, values, problems)
    _sigv4(section, warnings, problems)
    _calling_format(section, values, problems)
    if "search_backend" in section and not section["search_backend"]:
        # Named and empty, as the classic sample's `_env:SEARCH_BACKEND`: no search backend.
        values["search_backend"] = ""
    return values


def _bucket(section: Mapping[str, Any], values: dict[str, Any], problems: list[str]) -> None:
    alias = section.get("boto_bucket")
    if alias is None:
        return
    bucket = section.get("s3_bucket")
    if bucket is not None and bucket != alias:
        problems.append(
            f"key boto_bucket: {alias!r} differs from s3_bucket {bucket!r}; boto_bucket is the "
            f"classic name of s3_bucket, give one of them"
        )
    values["s3_bucket"] = alias if bucket is None else bucket


def _sigv4(section: Mapping[str, Any], warnings: list[str], problems: list[str]) -> None:
    value = section.get("s3_use_sigv4")
    if value is None or value is True:
        return  # boto3 signs every request with SigV4
    if value is False:
        warnings.append(
            "s3_use_sigv4 is ignored when false: Portside's S3 client (boto3) always signs with "
            "Signature Version 4, which every S3-compatible server it supports takes"
        )
    else:
        problems.append(f"key s3_use_sigv4: expected true or false, got {value!r}")


def _calling_format(
    section: Mapping[str, Any], values: dict[str, Any], problems: list[str]
) -> None:
    value = section.get("boto_calling_format")
    if value is None or value == "":
        return
    name = str(value).rpartition(".")[2].lower()
    if name not in _PATH_STYLE:
        problems.append(
            f"key boto_calling_format: expected boto.s3.connection.OrdinaryCallingFormat "
            f"(bucket in the path) or SubdomainCallingFormat (bucket in the host name), got "
            f"{value!r}"
        )
        return
    given = section.get("s3_path_style")
    if given is not None and given != _PATH_STYLE[name]:
        problems.append(
            f"key boto_calling_format: {value!r} contradicts s3_path_style: {given!r}; give one "
            f"of them"
        )
    values["s3_path_style"] = _PATH_STYLE[name]
