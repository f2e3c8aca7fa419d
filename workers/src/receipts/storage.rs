//! Where rendered receipts are kept.
//!
//! Two backends, one interface:
//! - a local directory (the default): `<dir>/<merchant>/<order>.txt` and
//!   `.html`, written to a temporary name and renamed, so a reader never sees
//!   half a receipt;
//! - an S3-compatible object store when `RECEIPT_STORE_URL` is set
//!   (`s3://bucket/prefix`): the same keys under the prefix, each object
//!   written whole by a single PUT.

use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, PutPayload};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use uuid::Uuid;

use super::render::Receipt;

/// Connection settings of an S3-compatible store.
#[derive(Debug, Clone)]
pub struct ObjectStoreConfig {
    /// `s3://bucket` or `s3://bucket/prefix`.
    pub url: String,
    /// For S3-compatible services (MinIO, Ceph, ...); AWS when unset.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// Plain HTTP to the endpoint (development only).
    pub allow_http: bool,
}

pub enum Store {
    Local(PathBuf),
    Object { store: Arc<dyn ObjectStore>, bucket_url: String, prefix: String },
}

impl Store {
    pub fn new(dir: &Path, object: Option<&ObjectStoreConfig>) -> anyhow::Result<Self> {
        let Some(cfg) = object else { return Ok(Self::Local(dir.to_path_buf())) };
        let rest = cfg
            .url
            .strip_prefix("s3://")
            .ok_or_else(|| anyhow::anyhow!("RECEIPT_STORE_URL={:?} must start with s3://", cfg.url))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let mut builder = AmazonS3Builder::new().with_bucket_name(bucket).with_allow_http(cfg.allow_http);
        if let Some(v) = &cfg.endpoint {
            builder = builder.with_endpoint(v);
        }
        builder = builder.with_region(cfg.region.clone().unwrap_or_else(|| "us-east-1".to_owned()));
        if let Some(v) = &cfg.access_key_id {
            builder = builder.with_access_key_id(v);
        }
        if let Some(v) = &cfg.secret_access_key {
            builder = builder.with_secret_access_key(v);
        }
        let store = builder.build().map_err(|e| anyhow::anyhow!("RECEIPT_STORE_URL: {e}"))?;
        Ok(Self::Object {
            store: Arc::new(store),
            bucket_url: format!("s3://{bucket}"),
            prefix: prefix.trim_matches('/').to_owned(),
        })
    }

    /// Writes both renderings; returns where the text one is.
    pub async fn store(
        &self,
        merchant_id: Uuid,
        order_id: Uuid,
        receipt: &Receipt,
    ) -> anyhow::Result<String> {
        match self {
            Self::Local(dir) => {
                let folder = dir.join(merchant_id.to_string());
                tokio::fs::create_dir_all(&folder).await?;
                for (ext, body) in [("txt", &receipt.text), ("html", &receipt.html)] {
                    let path = folder.join(format!("{order_id}.{ext}"));
                    let tmp = folder.join(format!(".{order_id}.{ext}.{}", Uuid::new_v4().simple()));
                    tokio::fs::write(&tmp, body.as_bytes()).await?;
                    tokio::fs::rename(&tmp, &path).await?;
                }
                Ok(folder.join(format!("{order_id}.txt")).display().to_string())
            }
            Self::Object { store, bucket_url, prefix } => {
                let key = |ext: &str| {
                    let name = format!("{merchant_id}/{order_id}.{ext}");
                    if prefix.is_empty() { name } else { format!("{prefix}/{name}") }
                };
                for (ext, body) in [("txt", &receipt.text), ("html", &receipt.html)] {
                    store
                        .put(&ObjectPath::from(key(ext)), PutPayload::from(body.clone().into_bytes()))
                        .await?;
                }
                Ok(format!("{bucket_url}/{}", key("txt")))
            }
        }
    }
}
