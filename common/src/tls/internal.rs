//! Mutual TLS between the components (`[internal_tls]`, env `HOTEL_<ROLE>__INTERNAL_TLS__*`).
//!
//! When a role's `internal_tls.enabled` is set, it has one identity for the whole process:
//! a certificate from the cluster's CA that names its role as a SPIFFE-style URI
//! (`spiffe://hotel/<role>`, Linkerd and Istio name workloads the same way). With it:
//! - its internal listener (a service's, the registry's) speaks TLS only and requires a
//!   client certificate from the same CA ([`serve`](crate::server::serve_internal));
//! - every request is checked against [`may_call`]: the role named by the client's
//!   certificate must be allowed to call this role on that path, or it is answered 403
//!   problem+json (a certificate from another CA, or none, fails the handshake);
//! - every client it makes (registry client, upstream stack, event feeds, booking's
//!   directory) presents that certificate and trusts only the CA ([`reqwest_client`],
//!   [`client_config`]); the URLs it registers and builds are `https://`.
//!
//! The identity is installed once at startup ([`install`]) and read by the places that
//! serve and connect: a process has exactly one role, and nothing else changes it. The
//! certificate files are read again every [`RELOAD_EVERY`] (renewal without a restart,
//! like the public listener's `tls.*`); the CA is read once.

use super::{ReloadingCert, provider};
use rustls::{
    ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme,
    client::{
        ResolvesClientCert,
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
        verify_server_cert_signed_by_trust_anchor,
    },
    crypto::WebPkiSupportedAlgorithms,
    server::{ParsedCertificate, WebPkiClientVerifier},
    sign::CertifiedKey,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject};
use serde::{Deserialize, Serialize};
use std::{
    path::{Path, PathBuf},
    sync::{Arc, OnceLock},
    time::Duration,
};

/// The URI prefix a certificate names its role with: `spiffe://hotel/<role>`.
pub const ROLE_URI_PREFIX: &str = "spiffe://hotel/";

/// How often the certificate and key files are read again.
pub const RELOAD_EVERY: Duration = Duration::from_secs(5);

/// The role of `hotel up`'s supervisor and of the CLI (`hotel status`, `hotel events`):
/// operators, allowed everywhere.
pub const CONTROL_ROLE: &str = "control";

/// Every identity a cluster has: the five roles, and `control` for the operators.
pub const IDENTITIES: [&str; 6] = [
    "registry",
    "gateway",
    "customer",
    "room",
    "booking",
    CONTROL_ROLE,
];

/// `[internal_tls]` as written in a role's TOML.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct InternalTlsSettings {
    /// Mutual TLS to and from the other components; off by default (cleartext on
    /// loopback, as `hotel up` runs without `--internal-tls`).
    pub enabled: bool,
    /// PEM file of the CA every component trusts (and only it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    /// PEM file of this process's certificate (leaf first), naming its role as
    /// `spiffe://hotel/<role>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// PEM file of its private key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
}

impl InternalTlsSettings {
    /// The identity of `role` when enabled; an error naming the key when a file is
    /// missing, unreadable, or names another role.
    pub fn load(&self, role: &str) -> Result<Option<Identity>, String> {
        if !self.enabled {
            return Ok(None);
        }
        let need = |p: &Option<PathBuf>, key: &str| {
            p.clone()
                .ok_or_else(|| format!("internal_tls.{key}: required when internal_tls.enabled"))
        };
        let (ca, cert, key) = (
            need(&self.ca, "ca")?,
            need(&self.cert, "cert")?,
            need(&self.key, "key")?,
        );
        Identity::load(role, &ca, &cert, &key).map(Some)
    }
}

/// A process's identity for mutual TLS: its role, its certificate (reloaded when the
/// files change), and the server and client configurations built on them.
#[derive(Debug)]
pub struct Identity {
    role: String,
    cert: Arc<ReloadingCert>,
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

impl Identity {
    /// Reads the CA, the certificate and its key; the certificate must name `role`.
    pub fn load(role: &str, ca: &Path, cert: &Path, key: &Path) -> Result<Identity, String> {
        let ca_pem = std::fs::read(ca)
            .map_err(|e| format!("internal_tls.ca: cannot read {}: {e}", ca.display()))?;
        let mut roots = RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(&ca_pem) {
            let c = c.map_err(|e| format!("internal_tls.ca: {}: {e}", ca.display()))?;
            roots
                .add(c)
                .map_err(|e| format!("internal_tls.ca: {}: {e}", ca.display()))?;
        }
        if roots.is_empty() {
            return Err(format!(
                "internal_tls.ca: {}: no certificate in it",
                ca.display()
            ));
        }
        let reloading = ReloadingCert::load(cert, key).map_err(|e| format!("internal_{e}"))?;
        let named = reloading
            .current()
            .cert
            .first()
            .and_then(|leaf| peer_role(std::slice::from_ref(leaf)));
        if named.as_deref() != Some(role) {
            return Err(format!(
                "internal_tls.cert: {} names role {}, this process is {role}",
                cert.display(),
                named.map_or_else(|| "none".to_owned(), |r| format!("{r:?}")),
            ));
        }
        let roots = Arc::new(roots);
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .build()
            .map_err(|e| format!("internal_tls.ca: {e}"))?;
        let mut server = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| format!("internal_tls: {e}"))?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(reloading.clone());
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let client = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| format!("internal_tls: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(RoleVerifier {
                roots,
                algorithms: provider().signature_verification_algorithms,
            }))
            .with_client_cert_resolver(Arc::new(ClientCert(reloading.clone())));
        Ok(Identity {
            role: role.to_owned(),
            cert: reloading,
            server: Arc::new(server),
            client: Arc::new(client),
        })
    }

    /// The role its certificate names.
    pub fn role(&self) -> &str {
        &self.role
    }

    /// The configuration of its internal listener: client certificates required.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.server.clone()
    }

    /// The configuration of its clients (no ALPN: each client sets its own).
    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.client.clone()
    }

    /// Reads the certificate files again every [`RELOAD_EVERY`] until the runtime ends;
    /// a renewed pair is used for new handshakes, a broken one is logged and skipped.
    pub fn watch(&self) {
        let role = self.role.clone();
        drop(self.cert.watch(RELOAD_EVERY, move |r| match r {
            Ok(()) => tracing::info!(role, "internal_tls: certificate reloaded"),
            Err(e) => tracing::warn!(role, error = %e, "internal_tls: certificate not reloaded"),
        }));
    }
}

/// The served certificate is also the one presented as a client.
#[derive(Debug)]
struct ClientCert(Arc<ReloadingCert>);

impl ResolvesClientCert for ClientCert {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// How a component checks the server it calls: by identity, not by address (as Linkerd
/// and Istio do). The chain must lead to the cluster's CA and be valid now, and the
/// leaf must name a role (`spiffe://hotel/<role>`); the host name or IP in the URL is
/// not compared with the certificate's names, because instances register addresses
/// that no certificate can know in advance (a pod's IP, a container's). The handshake's
/// signatures are checked as usual.
#[derive(Debug)]
struct RoleVerifier {
    roots: Arc<RootCertStore>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for RoleVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        match peer_role(std::slice::from_ref(end_entity)) {
            Some(_) => Ok(ServerCertVerified::assertion()),
            None => Err(rustls::Error::General(
                "internal_tls: the server's certificate names no role (spiffe://hotel/<role>)"
                    .into(),
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

static INSTALLED: OnceLock<Identity> = OnceLock::new();

/// Makes `identity` the process's identity; the first one installed stays (a process
/// has one role).
pub fn install(identity: Identity) -> &'static Identity {
    INSTALLED.get_or_init(|| identity)
}

/// The process's identity, when mutual TLS is on.
pub fn installed() -> Option<&'static Identity> {
    INSTALLED.get()
}

/// Loads and installs `role`'s identity from `settings` when enabled, and reads its
/// certificate files again every [`RELOAD_EVERY`] for as long as the runtime runs (the
/// served certificate and the one its clients present are the same). Call from inside
/// the process's runtime.
pub fn install_from(settings: &InternalTlsSettings, role: &str) -> Result<(), String> {
    if let Some(id) = settings.load(role)? {
        tracing::info!(role, "internal_tls: mutual TLS with the other components");
        install(id).watch();
    }
    Ok(())
}

/// `https` when mutual TLS is on, else `http`: the scheme of internal URLs.
pub fn scheme() -> &'static str {
    if installed().is_some() {
        "https"
    } else {
        "http"
    }
}

/// The base URL of an internal listener at `addr` (`HOST:PORT`).
pub fn base_url(addr: impl std::fmt::Display) -> String {
    format!("{}://{addr}", scheme())
}

/// The builder of every HTTP client the binary makes (internal calls, the operators'
/// tools): with mutual TLS on, it presents the process's certificate and trusts only the
/// cluster's CA; without, `https://` peers are refused. Either way its TLS configuration
/// is ours (the ring provider, no platform verifier): reqwest's own default would look
/// for the system's roots, which a `FROM scratch` image does not have, and fail to build.
pub fn reqwest_client() -> reqwest::ClientBuilder {
    let mut config = (*client_config_or_refusing()).clone();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    reqwest::Client::builder().use_preconfigured_tls(config)
}

/// The client configuration of the process's identity, when mutual TLS is on.
pub fn client_config() -> Option<Arc<ClientConfig>> {
    installed().map(|id| id.client.clone())
}

/// The client configuration of the process's identity; without one, a configuration
/// that trusts no CA, so that every `https://` peer is refused (internal peers are
/// reached over https only with mutual TLS on).
pub fn client_config_or_refusing() -> Arc<ClientConfig> {
    client_config().unwrap_or_else(|| {
        Arc::new(
            ClientConfig::builder_with_provider(provider())
                .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
                .expect("ring supports TLS 1.2 and 1.3")
                .with_root_certificates(RootCertStore::empty())
                .with_no_client_auth(),
        )
    })
}

/// The role the first certificate of `certs` names as `spiffe://hotel/<role>`.
pub fn peer_role(certs: &[CertificateDer<'_>]) -> Option<String> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let (_, leaf) = X509Certificate::from_der(certs.first()?.as_ref()).ok()?;
    let san = leaf.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|n| match n {
        GeneralName::URI(uri) => uri
            .strip_prefix(ROLE_URI_PREFIX)
            .filter(|r| !r.is_empty() && !r.contains('/'))
            .map(str::to_owned),
        _ => None,
    })
}

/// Who may call whom (the server's role, the client's role, and the path prefix it may
/// call, `""` for every path). The registry takes everyone with a certificate of the CA
/// (it has its own bearer token); room and customer are called by the gateway and by
/// booking; booking by the gateway, and by customer only for its event feed. `control`
/// (the supervisor, the CLI) may call everything.
const CALLERS: &[(&str, &str, &str)] = &[
    ("room", "gateway", ""),
    ("room", "booking", ""),
    ("customer", "gateway", ""),
    ("customer", "booking", ""),
    ("booking", "gateway", ""),
    ("booking", "customer", "/events"),
];

/// Whether a client whose certificate names `client` may call `path` on `server`.
pub fn may_call(server: &str, client: &str, path: &str) -> bool {
    client == CONTROL_ROLE
        || server == "registry"
        || CALLERS
            .iter()
            .any(|(s, c, prefix)| *s == server && *c == client && path.starts_with(prefix))
}

/// The role named by the client certificate of a request on an internal listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRole(pub Arc<str>);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::tls::local_ca::{self, Ca};

    #[test]
    fn only_the_gateway_and_booking_call_room_and_customer() {
        for server in ["room", "customer"] {
            assert!(may_call(server, "gateway", "/rooms"));
            assert!(may_call(server, "booking", "/events"));
            assert!(!may_call(server, "customer", "/rooms"));
            assert!(!may_call(server, "room", "/customers"));
            assert!(may_call(server, CONTROL_ROLE, "/admin/fault"));
        }
        assert!(may_call("booking", "customer", "/events?after=3"));
        assert!(!may_call("booking", "customer", "/bookings"));
        assert!(!may_call("booking", "room", "/events"));
        assert!(may_call("registry", "room", "/v1/services/room"));
    }

    #[test]
    fn a_role_certificate_loads_only_for_its_role_and_names_it() {
        let dir = std::env::temp_dir().join(format!("hotel-mtls-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = Ca::new("test CA").unwrap();
        let ca_path = dir.join("ca.pem");
        local_ca::write(&ca_path, &ca.cert_pem, false).unwrap();
        let (cert, key) = ca.issue_role("room", &["localhost", "127.0.0.1"]).unwrap();
        let (cp, kp) = (dir.join("room.pem"), dir.join("room-key.pem"));
        local_ca::write(&cp, &cert, false).unwrap();
        local_ca::write(&kp, &key, true).unwrap();
        let leaf = CertificateDer::from_pem_file(&cp).unwrap();
        assert_eq!(peer_role(&[leaf]).as_deref(), Some("room"));
        let settings = InternalTlsSettings {
            enabled: true,
            ca: Some(ca_path.clone()),
            cert: Some(cp.clone()),
            key: Some(kp.clone()),
        };
        assert_eq!(settings.load("room").unwrap().unwrap().role(), "room");
        let err = settings.load("booking").unwrap_err();
        assert!(err.contains("names role \"room\""), "{err}");
        let off = InternalTlsSettings::default();
        assert!(off.load("room").unwrap().is_none());
        let half = InternalTlsSettings {
            cert: None,
            ..settings
        };
        assert!(
            half.load("room")
                .unwrap_err()
                .starts_with("internal_tls.cert")
        );
        // A plain server certificate (no role URI) is no identity.
        let (plain, _) = ca.issue(&["localhost"]).unwrap();
        let plain = CertificateDer::from_pem_slice(plain.as_bytes()).unwrap();
        assert_eq!(peer_role(&[plain]), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// `role`'s identity from a certificate of `ca`, written under `dir`.
    fn identity(dir: &Path, ca: &Ca, ca_path: &Path, role: &str) -> Identity {
        let (cert, key) = ca.issue_role(role, &["localhost"]).unwrap();
        let (cp, kp) = (
            dir.join(format!("{role}.pem")),
            dir.join(format!("{role}-k.pem")),
        );
        local_ca::write(&cp, &cert, false).unwrap();
        local_ca::write(&kp, &key, true).unwrap();
        Identity::load(role, ca_path, &cp, &kp).unwrap()
    }

    /// A TLS handshake over an in-memory pipe, the client asking for `name`; the role
    /// the server saw, or the first error.
    async fn handshake(
        server: Arc<ServerConfig>,
        client: Arc<ClientConfig>,
        name: &str,
    ) -> Result<Option<String>, String> {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let name = ServerName::try_from(name.to_owned()).unwrap();
        let accept = tokio_rustls::TlsAcceptor::from(server).accept(a);
        let connect = tokio_rustls::TlsConnector::from(client).connect(name, b);
        let (s, c) = tokio::join!(accept, connect);
        // The side that refused reports it; the other sees the alert.
        let mut c = c.map_err(|e| format!("client: {e}"))?;
        let s = s.map_err(|e| format!("server: {e}"))?;
        // TLS 1.3: the server judges the client's certificate after the client finished;
        // a refusal reaches the client on its next read.
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = s;
        c.write_all(b"x")
            .await
            .map_err(|e| format!("client: {e}"))?;
        let mut byte = [0u8; 1];
        s.read_exact(&mut byte)
            .await
            .map_err(|e| format!("server: {e}"))?;
        Ok(s.get_ref().1.peer_certificates().and_then(peer_role))
    }

    #[tokio::test]
    async fn peers_are_checked_by_their_ca_and_role_not_by_the_address_called() {
        let dir = std::env::temp_dir().join(format!("hotel-mtls-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = Ca::new("test CA").unwrap();
        let ca_path = dir.join("ca.pem");
        local_ca::write(&ca_path, &ca.cert_pem, false).unwrap();
        let room = identity(&dir, &ca, &ca_path, "room");
        let gateway = identity(&dir, &ca, &ca_path, "gateway");
        // A pod's IP or a container's name is in no certificate: still the room.
        for name in ["10.88.0.7", "room.hotel.svc", "localhost"] {
            let seen = handshake(room.server_config(), gateway.client_config(), name).await;
            assert_eq!(seen, Ok(Some("gateway".to_owned())), "{name}");
        }
        // A server from another CA, even naming a role, is refused by the client.
        let rogue_dir = dir.join("rogue");
        std::fs::create_dir_all(&rogue_dir).unwrap();
        let rogue = Ca::new("rogue CA").unwrap();
        let rogue_ca = rogue_dir.join("ca.pem");
        local_ca::write(&rogue_ca, &rogue.cert_pem, false).unwrap();
        let impostor = identity(&rogue_dir, &rogue, &rogue_ca, "room");
        let err = handshake(
            impostor.server_config(),
            gateway.client_config(),
            "localhost",
        )
        .await
        .unwrap_err();
        assert!(err.starts_with("client:"), "{err}");
        // ... and that CA's client never gets a session with the room.
        let err = handshake(room.server_config(), impostor.client_config(), "localhost")
            .await
            .unwrap_err();
        assert!(err.contains("Unknown"), "{err}");
        // A client without a certificate is refused.
        let bare = Arc::new(
            ClientConfig::builder_with_provider(provider())
                .with_protocol_versions(&[&rustls::version::TLS13])
                .unwrap()
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(RoleVerifier {
                    roots: Arc::new({
                        let mut r = RootCertStore::empty();
                        r.add(CertificateDer::from_pem_file(&ca_path).unwrap())
                            .unwrap();
                        r
                    }),
                    algorithms: provider().signature_verification_algorithms,
                }))
                .with_no_client_auth(),
        );
        let err = handshake(room.server_config(), bare, "localhost")
            .await
            .unwrap_err();
        assert!(err.starts_with("server:"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
