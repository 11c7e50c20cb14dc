//! The one TLS client configuration avsd uses, for AVS (HTTP/2) and for Login with Amazon.
//!
//! Owns the choice of crypto provider (ring, never aws-lc-rs), the trust roots (Mozilla's,
//! compiled in, plus an explicit extra CA such as avs-sim's) and ALPN `h2`. Certificate
//! verification is always on: there is no switch to turn it off.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// Why the TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the extra CA file {path}: {source}")]
    ReadCa {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("the extra CA file {path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error(
        "the extra CA file {path} holds a certificate rustls refuses as a trust anchor: {source}"
    )]
    BadCertificate {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("the ring provider refused the protocol versions: {0}")]
    Provider(#[source] rustls::Error),
}

/// ALPN id of HTTP/2.
pub const ALPN_H2: &[u8] = b"h2";

/// Builds the client configuration: ring provider, webpki roots plus `extra_ca_pem` when given,
/// ALPN `h2`.
pub fn client_config(extra_ca_pem: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = extra_ca_pem {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|source| TlsError::ReadCa {
                path: path.to_owned(),
                source,
            })?;
        if certs.is_empty() {
            return Err(TlsError::NoCertificate {
                path: path.to_owned(),
            });
        }
        for cert in certs {
            roots.add(cert).map_err(|source| TlsError::BadCertificate {
                path: path.to_owned(),
                source,
            })?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Provider)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_offers_h2_only() {
        let cfg = client_config(None).unwrap();
        assert_eq!(cfg.alpn_protocols, vec![b"h2".to_vec()]);
    }

    #[test]
    fn missing_or_empty_ca_file_is_named() {
        let dir = std::env::temp_dir().join(format!("avsd-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.pem");
        let err = client_config(Some(&missing)).unwrap_err();
        assert!(err.to_string().contains("missing.pem"), "{err}");
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = client_config(Some(&empty)).unwrap_err();
        assert!(matches!(err, TlsError::NoCertificate { .. }), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
