//! Where rendered receipts are kept: a local directory (the default backend).
//!
//! Layout: `<dir>/<merchant>/<order>.txt` and `.html`, written to a temporary
//! name and renamed, so a reader never sees half a receipt. An object-store
//! backend would implement the same two calls; none is configured here.

use std::path::{Path, PathBuf};
use uuid::Uuid;

use super::render::Receipt;

/// Writes both renderings; returns the text file's path.
pub async fn store(
    dir: &Path,
    merchant_id: Uuid,
    order_id: Uuid,
    receipt: &Receipt,
) -> std::io::Result<PathBuf> {
    let folder = dir.join(merchant_id.to_string());
    tokio::fs::create_dir_all(&folder).await?;
    for (ext, body) in [("txt", &receipt.text), ("html", &receipt.html)] {
        let path = folder.join(format!("{order_id}.{ext}"));
        let tmp = folder.join(format!(".{order_id}.{ext}.{}", Uuid::new_v4().simple()));
        tokio::fs::write(&tmp, body.as_bytes()).await?;
        tokio::fs::rename(&tmp, &path).await?;
    }
    Ok(folder.join(format!("{order_id}.txt")))
}
