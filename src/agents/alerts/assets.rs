//! The alert asset cache, `<state_dir>/alert-assets/`: the sounds a `SetAlert` names are
//! downloaded when the alert is set (AVS §5.7: the URLs stay valid until an hour after the
//! alert's time, and the alert must ring offline), one file per URL named by a stable hash of
//! the URL, written atomically. Files no stored alert refers to are deleted; the cache's total
//! size is bounded (a download that would exceed it is skipped: that alert streams its assets
//! when it fires, or plays the bundled alarm offline).

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use url::Url;

use crate::media::fetch::MediaFetcher;

/// Sub-directory of the state directory.
pub const ASSET_DIR: &str = "alert-assets";
/// Largest single asset kept (alarm tones and short speech are tens of kilobytes).
pub const MAX_ASSET_BYTES: usize = 2 * 1024 * 1024;
/// Largest total size of the cache.
pub const MAX_CACHE_BYTES: u64 = 16 * 1024 * 1024;
/// Deadline for one asset's download.
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(60);
const SUFFIX: &str = ".asset";

/// Why an asset was not cached.
#[derive(Debug, thiserror::Error)]
pub enum AssetError {
    #[error("only https asset URLs are downloaded ({0})")]
    NotHttps(String),
    #[error("download failed: {0}")]
    Download(String),
    #[error("download took longer than {0:?}")]
    Timeout(Duration),
    #[error("the cache would exceed {MAX_CACHE_BYTES} bytes")]
    CacheFull,
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// FNV-1a, 64 bit: stable across builds and releases (unlike `DefaultHasher`), so a file
/// cached by one version is found by the next.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Where the asset fetched from `url` lives.
pub fn path_for(dir: &Path, url: &str) -> PathBuf {
    dir.join(format!("{:016x}{SUFFIX}", fnv1a64(url.as_bytes())))
}

/// The cached copy of `url`, if there is one.
pub fn cached(dir: &Path, url: &str) -> Option<PathBuf> {
    let p = path_for(dir, url);
    fs::metadata(&p)
        .ok()
        .filter(|m| m.is_file() && m.len() > 0)
        .map(|_| p)
}

fn cache_size(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Deletes every cached asset that is not the copy of one of `keep`, and temp files older than
/// any download can take (left by a crash; younger ones belong to downloads in progress).
/// Returns how many files were deleted.
pub fn retain(dir: &Path, keep: &HashSet<String>) -> usize {
    let wanted: HashSet<PathBuf> = keep.iter().map(|u| path_for(dir, u)).collect();
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let stale = |e: &fs::DirEntry| {
        e.metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > DOWNLOAD_TIMEOUT * 2)
    };
    let mut removed = 0;
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        let is_asset = path.to_string_lossy().ends_with(SUFFIX);
        let unwanted = if is_asset {
            !wanted.contains(&path)
        } else {
            stale(&entry)
        };
        if unwanted && fs::remove_file(&path).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Writes `bytes` as the copy of `url`, atomically.
fn store(dir: &Path, url: &str, bytes: &[u8]) -> Result<PathBuf, AssetError> {
    let path = path_for(dir, url);
    crate::persist::write_bytes(&path, bytes, 0o600).map_err(|source| AssetError::Write {
        path: path.display().to_string(),
        source,
    })?;
    Ok(path)
}

/// Downloads `url` into the cache unless it is there already.
pub async fn fetch_one(
    fetcher: &MediaFetcher,
    dir: &Path,
    url: &str,
) -> Result<PathBuf, AssetError> {
    if let Some(p) = cached(dir, url) {
        return Ok(p);
    }
    let parsed = Url::parse(url).map_err(|_| AssetError::NotHttps(url.to_owned()))?;
    if parsed.scheme() != "https" {
        return Err(AssetError::NotHttps(parsed.scheme().to_owned()));
    }
    let bytes = tokio::time::timeout(DOWNLOAD_TIMEOUT, fetcher.download(&parsed, MAX_ASSET_BYTES))
        .await
        .map_err(|_| AssetError::Timeout(DOWNLOAD_TIMEOUT))?
        .map_err(|f| AssetError::Download(f.message().to_owned()))?;
    let dir = dir.to_owned();
    let url = url.to_owned();
    tokio::task::spawn_blocking(move || {
        if cache_size(&dir) + bytes.len() as u64 > MAX_CACHE_BYTES {
            return Err(AssetError::CacheFull);
        }
        store(&dir, &url, &bytes)
    })
    .await
    .map_err(|e| AssetError::Download(e.to_string()))?
}

/// Starts downloading `urls` (one after the other) in the background; failures are logged and
/// leave the alert to stream its assets or play the bundled alarm. Needs a Tokio runtime;
/// without one nothing is downloaded.
pub fn prefetch(fetcher: &MediaFetcher, dir: &Path, token: &str, urls: Vec<String>) {
    if urls.is_empty() {
        return;
    }
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let (fetcher, dir, token) = (fetcher.clone(), dir.to_owned(), token.to_owned());
    runtime.spawn(async move {
        for url in urls {
            match fetch_one(&fetcher, &dir, &url).await {
                Ok(path) => {
                    tracing::info!(%token, path = %path.display(), "alert asset cached")
                }
                Err(e) => {
                    tracing::warn!(%token, error = %e, "alert asset not cached; it will be streamed when the alert fires, or replaced by the bundled alarm")
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_stable_and_retain_deletes_the_rest() {
        // FNV-1a test vector: "a" → 0xaf63dc4c8601ec8c.
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        let dir = std::env::temp_dir().join(format!("avsd-assets-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let (a, b) = ("https://x/a.mp3", "https://x/b.mp3");
        store(&dir, a, b"aaa").unwrap();
        store(&dir, b, b"bbb").unwrap();
        // A download in progress keeps its temp file.
        fs::write(dir.join("0123.tmp.1"), b"x").unwrap();
        assert_eq!(cached(&dir, a), Some(path_for(&dir, a)));
        assert_eq!(cache_size(&dir), 7);
        let keep: HashSet<String> = [a.to_owned()].into();
        assert_eq!(retain(&dir, &keep), 1);
        assert!(dir.join("0123.tmp.1").exists());
        assert!(cached(&dir, a).is_some());
        assert!(cached(&dir, b).is_none());
        fs::remove_dir_all(&dir).unwrap();
    }
}
