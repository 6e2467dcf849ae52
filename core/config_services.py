"""The trial config's service sections: listener (TLS, admission bounds), paths, warehouse storage.

Split from :mod:`rntflow.core.config` (which imports and re-exports every name here) to keep
the trial's science settings and the services' settings in modules of readable size.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

#: DICOM AE title: 1-16 printable ASCII characters (PS3.5 Table 6.2-1, VR AE).
AE_TITLE_RE = re.compile(r"^[\x20-\x7e]{1,16}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_ae(value: str) -> str:
    if not AE_TITLE_RE.match(value) or value.strip() == "" or "\\" in value:
        raise ValueError(f"{value!r} is not a valid AE title (1-16 printable ASCII, no backslash)")
    return value.strip()


class TlsSettings(_Strict):
    """DICOM TLS with mutual authentication (PS3.15 Annex B)."""

    enabled: bool = False
    cert_file: Path | None = None
    key_file: Path | None = None
    ca_file: Path | None = None

    @model_validator(mode="after")
    def _files_when_enabled(self) -> TlsSettings:
        if self.enabled:
            missing = [n for n in ("cert_file", "key_file", "ca_file") if getattr(self, n) is None]
            if missing:
                raise ValueError(f"TLS is enabled but {', '.join(missing)} not set")
        return self


class AdmissionSettings(_Strict):
    """Bounds the listener's front applies before and during an association (seconds, bytes, counts).

    See ``rntflow.listener.front.AdmissionLimits`` for what each bound does.
    """

    request_timeout_s: float = Field(5.0, gt=0, allow_inf_nan=False)
    max_request_bytes: int = Field(64 * 1024, ge=1024, strict=True)
    max_per_address: int = Field(16, ge=1, strict=True)
    max_pending: int = Field(128, ge=1, strict=True)
    idle_timeout_s: float = Field(60.0, gt=0, allow_inf_nan=False)
    max_associations: int = Field(64, ge=1, strict=True)


class ListenerSettings(_Strict):
    """The DICOM Storage SCP."""

    ae_title: str = "RNTFLOW"
    host: str = "127.0.0.1"
    port: int = Field(11112, ge=1, le=65535)
    quiet_period_s: float = Field(30.0, ge=0)
    min_free_disk_mb: float = Field(500.0, ge=0)
    max_pdu_bytes: int = Field(0, ge=0)
    tls: TlsSettings = TlsSettings()
    admission: AdmissionSettings = AdmissionSettings()

    _ae = field_validator("ae_title")(_check_ae)


class PathSettings(_Strict):
    """Where data lands. Relative paths are relative to the config file's folder."""

    spool: Path = Path("data/spool")
    warehouse: Path = Path("data/warehouse")
    # ``keys`` in the YAML; named keys_path here because a model attribute named ``keys``
    # makes mapping-like code (dict(model), Prefect's parameter walk) call it as a method
    keys_path: Path = Field(Path("data/keys"), alias="keys")
    enrolment: Path = Path("enrolment.csv")
    phantom_fills: Path = Path("phantom_fills.csv")
    prefect_home: Path = Path("data/prefect")
    products: Path = Path("data/products")

    @field_validator(
        "spool", "warehouse", "keys_path", "enrolment", "phantom_fills", "prefect_home", "products", mode="before"
    )
    @classmethod
    def _local_paths_only(cls, value: object) -> object:
        # Path("s3://b/p") would silently become the local folder "s3:/b/p"
        if isinstance(value, str) and "://" in value:
            raise ValueError(
                f"{value!r} is a URL; paths are local folders (a warehouse in object storage: warehouse_storage.url)"
            )
        return value


class WarehouseStorageSettings(_Strict):
    """Object storage for the warehouse (``warehouse_storage`` in the YAML; unset: ``paths.warehouse``).

    ``url`` (``s3://bucket/prefix``) replaces the local folder; ``endpoint_url`` and ``region`` name
    an S3-compatible server. Credentials come from the AWS chain (``AWS_ACCESS_KEY_ID`` ..., profile,
    role), never from here. See ``warehouse/storage.py``.
    """

    url: str | None = Field(None, pattern=r"^s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/[^?#]*)?$")
    endpoint_url: str | None = Field(None, pattern=r"^https?://[^/?#]+/?$")
    region: str | None = Field(None, pattern=r"^[a-z0-9-]{2,32}$")
