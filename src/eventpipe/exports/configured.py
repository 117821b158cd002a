"""The export store the settings name: an S3 bucket if one is set, else a local directory."""

from __future__ import annotations

from eventpipe.core.config import Settings
from eventpipe.exports.store import ExportStore, LocalExportStore, S3ExportStore


def configured_store(settings: Settings) -> ExportStore:
    if settings.export_s3_bucket:
        secret = settings.export_s3_secret_access_key
        return S3ExportStore(
            settings.export_s3_bucket,
            spool_dir=settings.export_path / ".spool",
            endpoint_url=str(settings.export_s3_endpoint_url)
            if settings.export_s3_endpoint_url
            else None,
            region=settings.export_s3_region,
            access_key_id=settings.export_s3_access_key_id,
            secret_access_key=secret.get_secret_value() if secret else None,
            prefix=settings.export_s3_prefix,
        )
    return LocalExportStore(settings.export_path)
