//! The token file `<state_dir>/tokens.json`: LWA access and refresh tokens with the access
//! token's expiry. Written atomically (temp file in the same directory, write, fsync, rename,
//! fsync the directory) with mode 0600, so a crash or power cut leaves either the old or the new
//! file and nobody else on the box can read the tokens. Owns nothing else.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// File name of the token store inside the state directory.
pub const TOKEN_FILE: &str = "tokens.json";

/// The persisted tokens. `Debug` is written by hand so no token reaches a log.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredTokens {
    pub access_token: String,
    pub refresh_token: String,
    /// When the access token expires, milliseconds since the Unix epoch.
    pub expires_at_unix_ms: u64,
    /// The lifetime LWA gave the access token, seconds (drives how early we refresh).
    pub lifetime_s: u64,
}

impl std::fmt::Debug for StoredTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredTokens")
            .field("access_token", &"<redacted>")
            .field("refresh_token", &"<redacted>")
            .field("expires_at_unix_ms", &self.expires_at_unix_ms)
            .field("lifetime_s", &self.lifetime_s)
            .finish()
    }
}

impl StoredTokens {
    /// Tokens issued at `now` with a lifetime of `expires_in`.
    pub fn issued(
        access_token: String,
        refresh_token: String,
        expires_in: Duration,
        now: SystemTime,
    ) -> Self {
        let now_ms = now
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        Self {
            access_token,
            refresh_token,
            expires_at_unix_ms: now_ms.saturating_add(expires_in.as_millis() as u64),
            lifetime_s: expires_in.as_secs(),
        }
    }

    /// Time left before the access token expires (zero when it has).
    pub fn remaining(&self, now: SystemTime) -> Duration {
        let now_ms = now
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        Duration::from_millis(self.expires_at_unix_ms.saturating_sub(now_ms))
    }
}

/// Why the token file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenStoreError {
    #[error("no token file at {path}; run `avsd login` first")]
    Missing { path: PathBuf },
    #[error("cannot read the token file {path}: {source}; run `avsd login` again")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the token file {path} is corrupt ({source}); run `avsd login` again")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot write the token file {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub fn token_path(state_dir: &Path) -> PathBuf {
    state_dir.join(TOKEN_FILE)
}

/// Loads the tokens.
pub fn load(state_dir: &Path) -> Result<StoredTokens, TokenStoreError> {
    let path = token_path(state_dir);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(TokenStoreError::Missing { path });
        }
        Err(source) => return Err(TokenStoreError::Read { path, source }),
    };
    serde_json::from_slice(&bytes).map_err(|source| TokenStoreError::Corrupt { path, source })
}

/// Replaces the token file atomically with mode 0600 (the state directory is created if needed).
pub fn save(state_dir: &Path, tokens: &StoredTokens) -> Result<(), TokenStoreError> {
    let path = token_path(state_dir);
    let write_err = |source| TokenStoreError::Write {
        path: path.clone(),
        source,
    };
    let json =
        serde_json::to_vec_pretty(tokens).map_err(|e| write_err(std::io::Error::other(e)))?;
    crate::persist::write_bytes(&path, &json, 0o600).map_err(write_err)
}

/// Removes the token file; a missing file is fine.
pub fn remove(state_dir: &Path) -> Result<(), TokenStoreError> {
    let path = token_path(state_dir);
    match fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(TokenStoreError::Write { path, source }),
    }
    if let Ok(dir) = File::open(state_dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("avsd-ts-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn sample() -> StoredTokens {
        StoredTokens::issued(
            "Atza|secret-access".into(),
            "Atzr|secret-refresh".into(),
            Duration::from_secs(3600),
            SystemTime::now(),
        )
    }

    #[test]
    fn round_trip_with_mode_0600_and_no_leftovers() {
        let dir = temp_dir("rt");
        let t = sample();
        save(&dir, &t).unwrap();
        assert_eq!(load(&dir).unwrap(), t);
        let mode = fs::metadata(token_path(&dir)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // Overwrite: still 0600, still only one file in the directory.
        let mut t2 = t.clone();
        t2.access_token = "Atza|second".into();
        save(&dir, &t2).unwrap();
        assert_eq!(load(&dir).unwrap().access_token, "Atza|second");
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(TOKEN_FILE)]);
        remove(&dir).unwrap();
        assert!(matches!(load(&dir), Err(TokenStoreError::Missing { .. })));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn replacing_a_world_readable_file_yields_0600() {
        let dir = temp_dir("mode");
        fs::create_dir_all(&dir).unwrap();
        fs::write(token_path(&dir), "{}").unwrap();
        fs::set_permissions(token_path(&dir), fs::Permissions::from_mode(0o644)).unwrap();
        save(&dir, &sample()).unwrap();
        let mode = fs::metadata(token_path(&dir)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn corrupt_and_missing_files_name_the_path_and_the_fix() {
        let dir = temp_dir("bad");
        let err = load(&dir).unwrap_err().to_string();
        assert!(
            err.contains("tokens.json") && err.contains("avsd login"),
            "{err}"
        );
        fs::create_dir_all(&dir).unwrap();
        fs::write(token_path(&dir), "{\"access_token\": ").unwrap();
        let err = load(&dir).unwrap_err();
        assert!(matches!(err, TokenStoreError::Corrupt { .. }));
        let text = err.to_string();
        assert!(
            text.contains(&token_path(&dir).display().to_string()) && text.contains("avsd login"),
            "{text}"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn debug_redacts_tokens_and_remaining_counts_down() {
        let t = sample();
        let dbg = format!("{t:?}");
        assert!(!dbg.contains("secret"), "{dbg}");
        let later = SystemTime::now() + Duration::from_secs(3000);
        let left = t.remaining(later);
        assert!(
            left <= Duration::from_secs(600) && left > Duration::from_secs(590),
            "{left:?}"
        );
        assert_eq!(
            t.remaining(SystemTime::now() + Duration::from_secs(4000)),
            Duration::ZERO
        );
    }
}
