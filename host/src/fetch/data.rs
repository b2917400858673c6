//! Data bindings: each `URI=LOCAL_PATH` is fetched into the run's data
//! folder before the plan runs. `file://` is copied; `http(s)://`, `s3://`,
//! `gs://` and `az://` go through `object_store`, with credentials from the
//! usual environment variables (`AWS_*`, `GOOGLE_*`, `AZURE_*`). A URI that
//! names a prefix rather than one object fetches everything under it.

use std::path::{Component, Path};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, RetryConfig};
use tokio::io::AsyncWriteExt;
use url::Url;

use crate::exec::RunLog;
use crate::plan::DataBinding;
use crate::Error;

/// Fetches every binding into `data_dir`.
pub async fn fetch_data(
    bindings: &[DataBinding],
    data_dir: &Path,
    log: &RunLog,
) -> Result<(), Error> {
    for b in bindings {
        let dest = safe_join(data_dir, &b.local_path).ok_or_else(|| Error::Data {
            uri: b.uri.clone(),
            message: format!(
                "local path '{}' must be relative and stay inside the data folder",
                b.local_path
            ),
        })?;
        log.note(&format!("fetching {} -> {}", b.uri, dest.display()));
        let bytes = fetch_one(&b.uri, &dest).await?;
        log.note(&format!("fetched {} ({bytes} bytes)", b.uri));
    }
    Ok(())
}

fn safe_join(root: &Path, rel: &str) -> Option<std::path::PathBuf> {
    let p = Path::new(rel);
    if rel.is_empty()
        || p.components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return None;
    }
    Some(root.join(p))
}

fn data_err(uri: &str, message: impl std::fmt::Display) -> Error {
    Error::Data {
        uri: uri.to_string(),
        message: message.to_string(),
    }
}

async fn fetch_one(uri: &str, dest: &Path) -> Result<u64, Error> {
    let url = Url::parse(uri).map_err(|e| data_err(uri, format!("not a URL: {e}")))?;
    if url.scheme() == "file" {
        let src = url
            .to_file_path()
            .map_err(|_| data_err(uri, "not a local file path"))?;
        let meta = std::fs::metadata(&src).map_err(|e| data_err(uri, e))?;
        if meta.is_dir() {
            crate::fetch::source::copy_tree(&src, dest)?;
            return Ok(dir_size(dest));
        }
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        return std::fs::copy(&src, dest).map_err(|e| data_err(uri, e));
    }
    let (store, path) = open_store(&url)?;
    match store.get(&path).await {
        Ok(result) => download(uri, result.into_stream(), dest).await,
        Err(object_store::Error::NotFound { .. })
            if url.scheme() != "http" && url.scheme() != "https" =>
        {
            // Not an object: fetch the prefix.
            let mut listing = store.list(Some(&path));
            let mut total = 0;
            let mut count = 0;
            while let Some(meta) = listing.next().await {
                let meta = meta.map_err(|e| data_err(uri, e))?;
                let rel = meta
                    .location
                    .prefix_match(&path)
                    .map(|parts| {
                        parts
                            .map(|p| p.as_ref().to_string())
                            .collect::<Vec<_>>()
                            .join("/")
                    })
                    .unwrap_or_default();
                let target = if rel.is_empty() {
                    dest.to_path_buf()
                } else {
                    dest.join(rel)
                };
                let got = store
                    .get(&meta.location)
                    .await
                    .map_err(|e| data_err(uri, e))?;
                total += download(uri, got.into_stream(), &target).await?;
                count += 1;
            }
            if count == 0 {
                return Err(data_err(uri, "no such object or prefix"));
            }
            Ok(total)
        }
        Err(e) => Err(data_err(uri, e)),
    }
}

fn open_store(url: &Url) -> Result<(Arc<dyn ObjectStore>, ObjectPath), Error> {
    let uri = url.as_str();
    // Fail fast on an unreachable endpoint instead of object_store's
    // default of retrying for minutes.
    let retry = RetryConfig {
        max_retries: 2,
        retry_timeout: Duration::from_secs(20),
        ..RetryConfig::default()
    };
    let options = ClientOptions::new()
        .with_connect_timeout(Duration::from_secs(10))
        .with_timeout(Duration::from_secs(300));
    let key = ObjectPath::from(url.path().trim_start_matches('/'));
    let store: Arc<dyn ObjectStore> = match url.scheme() {
        "http" | "https" => {
            let base = format!("{}://{}", url.scheme(), url.authority());
            Arc::new(
                object_store::http::HttpBuilder::new()
                    .with_url(base)
                    .with_client_options(options.with_allow_http(true))
                    .with_retry(retry)
                    .build()
                    .map_err(|e| data_err(uri, e))?,
            )
        }
        "s3" | "s3a" => Arc::new(
            object_store::aws::AmazonS3Builder::from_env()
                .with_url(uri)
                .with_client_options(options)
                .with_retry(retry)
                .build()
                .map_err(|e| data_err(uri, e))?,
        ),
        "gs" => Arc::new(
            object_store::gcp::GoogleCloudStorageBuilder::from_env()
                .with_url(uri)
                .with_client_options(options)
                .with_retry(retry)
                .build()
                .map_err(|e| data_err(uri, e))?,
        ),
        "az" | "abfs" | "abfss" | "azure" => Arc::new(
            object_store::azure::MicrosoftAzureBuilder::from_env()
                .with_url(uri)
                .with_client_options(options)
                .with_retry(retry)
                .build()
                .map_err(|e| data_err(uri, e))?,
        ),
        other => {
            return Err(data_err(
                uri,
                format!("unsupported scheme '{other}': use file, http, https, s3, gs or az"),
            ))
        }
    };
    Ok((store, key))
}

async fn download<S>(uri: &str, mut stream: S, dest: &Path) -> Result<u64, Error>
where
    S: futures_util::Stream<Item = object_store::Result<bytes::Bytes>> + Unpin,
{
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    let mut file = tokio::fs::File::create(dest)
        .await
        .map_err(|e| Error::io(dest, e))?;
    let mut total = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| data_err(uri, e))?;
        total += chunk.len() as u64;
        file.write_all(&chunk)
            .await
            .map_err(|e| Error::io(dest, e))?;
    }
    file.flush().await.map_err(|e| Error::io(dest, e))?;
    Ok(total)
}

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|it| {
            it.flatten()
                .map(|e| match e.file_type() {
                    Ok(t) if t.is_dir() => dir_size(&e.path()),
                    _ => e.metadata().map(|m| m.len()).unwrap_or(0),
                })
                .sum()
        })
        .unwrap_or(0)
}
