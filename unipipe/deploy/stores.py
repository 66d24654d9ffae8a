"""Object stores the Airflow services read DAGs from: S3 (MWAA) and GCS (Cloud Composer).

Both keep a sha256 of the content in the object's metadata, so an unchanged file is recognised
without downloading it and never re-uploaded (on a versioned bucket a re-upload would make a new
version and look like a change). Credentials and endpoints come from each SDK's standard
environment (AWS_* / AWS_ENDPOINT_URL_S3, GOOGLE_APPLICATION_CREDENTIALS / STORAGE_EMULATOR_HOST).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from unipipe.deploy.options import DeployFailed

META_KEY = "unipipe-sha256"


@dataclass(frozen=True)
class RemoteObject:
    sha256: str | None  # from our metadata; None when someone else wrote the object
    md5: str | None  # hex digest the service reports (S3 ETag of a single-part upload, GCS md5Hash)
    version: str | None  # S3 VersionId / GCS generation

    def same_as(self, data: bytes) -> bool:
        if self.sha256 is not None:
            return self.sha256 == hashlib.sha256(data).hexdigest()
        return self.md5 is not None and self.md5 == hashlib.md5(data).hexdigest()


def content_type(path: str) -> str:
    if path.endswith(".zip"):
        return "application/zip"
    return "text/x-python" if path.endswith(".py") else "text/plain"


class S3Store:
    scheme = "s3"

    def __init__(self, bucket: str) -> None:
        try:
            import boto3
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise DeployFailed("deploying to MWAA needs boto3: pip install 'unipipe-airflow[mwaa]'") from exc
        self.bucket = bucket
        self.client: Any = boto3.client("s3")

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def versioning(self) -> str | None:
        return self.client.get_bucket_versioning(Bucket=self.bucket).get("Status")

    def stat(self, key: str) -> RemoteObject | None:
        from botocore.exceptions import ClientError

        try:
            head = self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        etag = (head.get("ETag") or "").strip('"')
        return RemoteObject(sha256=(head.get("Metadata") or {}).get(META_KEY),
                            md5=etag if "-" not in etag else None,
                            version=head.get("VersionId"))

    def get(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def put(self, key: str, data: bytes) -> str | None:
        resp = self.client.put_object(Bucket=self.bucket, Key=key, Body=data,
                                      ContentType=content_type(key),
                                      Metadata={META_KEY: hashlib.sha256(data).hexdigest()})
        return resp.get("VersionId")


class GCSStore:
    scheme = "gs"

    def __init__(self, bucket: str) -> None:
        try:
            from google.cloud import storage
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise DeployFailed("deploying to Cloud Composer needs google-cloud-storage: "
                               "pip install 'unipipe-airflow[composer]'") from exc
        self.bucket_name = bucket
        self.client: Any = storage.Client()
        self.bucket: Any = self.client.bucket(bucket)

    def url(self, key: str) -> str:
        return f"gs://{self.bucket_name}/{key}"

    def stat(self, key: str) -> RemoteObject | None:
        import base64

        blob = self.bucket.get_blob(key)
        if blob is None:
            return None
        md5 = base64.b64decode(blob.md5_hash).hex() if blob.md5_hash else None
        return RemoteObject(sha256=(blob.metadata or {}).get(META_KEY), md5=md5,
                            version=str(blob.generation) if blob.generation else None)

    def put(self, key: str, data: bytes) -> str | None:
        blob = self.bucket.blob(key)
        blob.metadata = {META_KEY: hashlib.sha256(data).hexdigest()}
        blob.upload_from_string(data, content_type=content_type(key))
        return str(blob.generation) if blob.generation else None
