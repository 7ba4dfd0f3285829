//! The HTTPS connector of nbgate's own outgoing clients: the ACME client
//! (`tls::acme`) and the OpenID Connect client (`auth::oidc`). One place
//! decides which roots they trust: the platform's verifier by default, or
//! only the certificates of a configured `ca_bundle` (an internal CA, or a
//! test CA such as Pebble's). Built on [`super::client_provider`] by name:
//! rustls cannot pick a process default while two providers are compiled in.

use std::path::{Path, PathBuf};

use hyper_rustls::builderstates::WantsSchemes;
use hyper_rustls::HttpsConnectorBuilder;

/// Why the connector could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientTlsError {
    #[error("{path}: cannot read the CA bundle")]
    CaBundle {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: no usable PEM certificate in the CA bundle")]
    CaBundleEmpty { path: PathBuf },
    #[error("cannot load the platform's certificate verifier")]
    Platform(#[source] std::io::Error),
}

/// An HTTPS connector builder that trusts `ca_bundle`'s certificates only,
/// or the platform's roots when `None`; the caller picks the schemes
/// (`https_only`, or `https_or_http` when it checks every URL itself) and
/// the HTTP versions.
///
/// # Errors
/// The bundle cannot be read or holds no certificate; the platform
/// verifier cannot be loaded.
pub fn connector_builder(
    ca_bundle: Option<&Path>,
) -> Result<HttpsConnectorBuilder<WantsSchemes>, ClientTlsError> {
    match ca_bundle {
        None => HttpsConnectorBuilder::new()
            .with_provider_and_platform_verifier(super::client_provider())
            .map_err(ClientTlsError::Platform),
        Some(path) => {
            let pem = std::fs::read(path).map_err(|source| ClientTlsError::CaBundle {
                path: path.to_path_buf(),
                source,
            })?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls_pemfile::certs(&mut &pem[..]).flatten() {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(ClientTlsError::CaBundleEmpty {
                    path: path.to_path_buf(),
                });
            }
            let tls = rustls::ClientConfig::builder_with_provider(super::client_provider())
                .with_safe_default_protocol_versions()
                .expect("aws-lc-rs supports the default protocol versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
            Ok(HttpsConnectorBuilder::new().with_tls_config(tls))
        }
    }
}
