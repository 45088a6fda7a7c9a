//! TLS for a listener (the `tls.*` settings every role takes), with certificates that
//! are reloaded when their files change, and the local CA of `hotel up --tls`.
//!
//! One crypto provider (ring) is named explicitly everywhere, never the process default,
//! so it does not matter which providers other crates compile into rustls. Versions:
//! TLS 1.3 and 1.2 only; suites: ring's defaults, which are all AEAD with forward secrecy
//! (TLS 1.3: AES-GCM, ChaCha20-Poly1305; TLS 1.2: ECDHE with the same ciphers). ALPN
//! offers `h2` first, then `http/1.1`.

pub mod internal;

use arc_swap::ArcSwap;
use rustls::{
    ServerConfig,
    crypto::CryptoProvider,
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use serde::{Deserialize, Serialize};
use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

/// `[tls]` as written in a role's TOML (env `HOTEL_<ROLE>__TLS__CERT` etc.). With `cert`
/// and `key` the role's public listener speaks TLS; without them, cleartext.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSettings {
    /// PEM file with the certificate chain, leaf first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// PEM file with the private key (PKCS#8, SEC1 or PKCS#1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    /// How often the two files are read again; a changed pair that is valid replaces
    /// the served certificate for new handshakes (renewal without a restart).
    #[serde(with = "humantime_serde")]
    pub reload_interval: Duration,
}

impl Default for TlsSettings {
    fn default() -> Self {
        TlsSettings {
            cert: None,
            key: None,
            reload_interval: Duration::from_secs(5),
        }
    }
}

impl TlsSettings {
    /// The certificate and key paths when TLS is on; an error naming the key when only
    /// one is set or the interval is zero.
    pub fn files(&self) -> Result<Option<(&Path, &Path)>, String> {
        if self.reload_interval.is_zero() {
            return Err("tls.reload_interval: must be more than 0".into());
        }
        match (&self.cert, &self.key) {
            (Some(c), Some(k)) => Ok(Some((c, k))),
            (None, None) => Ok(None),
            (Some(_), None) => Err("tls.key: required when tls.cert is set".into()),
            (None, Some(_)) => Err("tls.cert: required when tls.key is set".into()),
        }
    }
}

/// The crypto provider every TLS object here is built with.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads a certificate chain and its private key; the message names the file and what is
/// wrong with it (missing, no certificate, no key, key not matching the certificate).
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, String> {
    let (c, k) = read_pair(cert, key)?;
    certified_key(&c, &k, cert, key)
}

fn read_pair(cert: &Path, key: &Path) -> Result<(Vec<u8>, Vec<u8>), String> {
    let read = |p: &Path, what: &str| {
        std::fs::read(p).map_err(|e| format!("tls.{what}: cannot read {}: {e}", p.display()))
    };
    Ok((read(cert, "cert")?, read(key, "key")?))
}

fn certified_key(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert: &Path,
    key: &Path,
) -> Result<CertifiedKey, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("tls.cert: {}: not PEM certificates: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "tls.cert: {}: no certificate in it",
            cert.display()
        ));
    }
    let der = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| format!("tls.key: {}: no private key in it: {e}", key.display()))?;
    let ck = CertifiedKey::from_der(chain, der, &provider()).map_err(|e| {
        format!(
            "tls.key: {} does not fit the certificate in {}: {e}",
            key.display(),
            cert.display()
        )
    })?;
    Ok(ck)
}

/// The certificate a listener serves, swapped whole when its files change. Handshakes
/// in progress keep the one they started with.
#[derive(Debug)]
pub struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    current: ArcSwap<CertifiedKey>,
    /// The file contents last tried (loaded or refused), so an unchanged pair is neither
    /// parsed nor logged again.
    seen: Mutex<(Vec<u8>, Vec<u8>)>,
}

impl ReloadingCert {
    /// Loads the pair at startup; an error is fatal to the caller.
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<ReloadingCert>, String> {
        let (c, k) = read_pair(cert, key)?;
        let ck = certified_key(&c, &k, cert, key)?;
        Ok(Arc::new(ReloadingCert {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: ArcSwap::from_pointee(ck),
            seen: Mutex::new((c, k)),
        }))
    }

    /// The pair served now.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.load_full()
    }

    /// Reads the files again: `Ok(true)` when a new valid pair was swapped in, `Ok(false)`
    /// when they are as last seen, `Err` (the served certificate stays) when the new
    /// contents are unreadable or do not form a valid pair, e.g. halfway through a
    /// renewal that writes the two files one after the other: the next check retries.
    pub fn check(&self) -> Result<bool, String> {
        let (c, k) = read_pair(&self.cert, &self.key)?;
        let mut seen = match self.seen.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if seen.0 == c && seen.1 == k {
            return Ok(false);
        }
        let result = certified_key(&c, &k, &self.cert, &self.key);
        *seen = (c, k);
        let ck = result?;
        self.current.store(Arc::new(ck));
        Ok(true)
    }

    /// Checks the files every `every` until the task is aborted, reporting each change
    /// (loaded, or refused with the reason) to `report`.
    pub fn watch(
        self: &Arc<Self>,
        every: Duration,
        report: impl Fn(Result<(), String>) + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                match me.check() {
                    Ok(false) => {}
                    Ok(true) => report(Ok(())),
                    Err(e) => report(Err(e)),
                }
            }
        })
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// A server configuration serving `cert`: TLS 1.3 and 1.2, ALPN `h2` and `http/1.1`, no
/// client certificate asked for.
pub fn server_config(cert: Arc<ReloadingCert>) -> Result<Arc<ServerConfig>, String> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("tls: {e}"))?
        .with_no_client_auth()
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The local certificate authority of `hotel up --tls` and the certificates it issues.
pub mod local_ca {
    use rcgen::{
        BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
        IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
    };
    use std::path::{Path, PathBuf};
    use time::{Duration, OffsetDateTime};

    /// The CA's common name (also how users find it in a trust store).
    pub const CA_NAME: &str = "hotel local development CA";

    /// A CA: its certificate (PEM) and the key that signs with it.
    pub struct Ca {
        /// The CA certificate, PEM.
        pub cert_pem: String,
        issuer: Issuer<'static, KeyPair>,
    }

    fn ca_params(name: &str) -> CertificateParams {
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        dn.push(DnType::OrganizationName, "hotel");
        p.distinguished_name = dn;
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        p
    }

    impl Ca {
        /// A new CA named `name`, valid from yesterday for ten years.
        pub fn new(name: &str) -> Result<Ca, String> {
            let key = KeyPair::generate().map_err(|e| e.to_string())?;
            let mut p = ca_params(name);
            let now = OffsetDateTime::now_utc();
            p.not_before = now - Duration::days(1);
            p.not_after = now + Duration::days(3650);
            let cert = p.self_signed(&key).map_err(|e| e.to_string())?;
            Ok(Ca {
                cert_pem: cert.pem(),
                issuer: Issuer::new(ca_params(name), key),
            })
        }

        /// The CA of `cert_pem` with its key `key_pem`, as [`Ca::new`] named `name` wrote
        /// them (the certificates it issues name the same subject and key).
        pub fn from_pem(name: &str, cert_pem: String, key_pem: &str) -> Result<Ca, String> {
            let key = KeyPair::from_pem(key_pem).map_err(|e| e.to_string())?;
            Ok(Ca {
                cert_pem,
                issuer: Issuer::new(ca_params(name), key),
            })
        }

        /// The CA's private key, PEM.
        pub fn key_pem(&self) -> String {
            self.issuer.key().serialize_pem()
        }

        /// A server and client certificate for `names` (DNS names or IP addresses; the
        /// first is also the common name), valid between `not_before` and `not_after`:
        /// (certificate PEM, key PEM).
        pub fn issue_between(
            &self,
            names: &[&str],
            not_before: OffsetDateTime,
            not_after: OffsetDateTime,
        ) -> Result<(String, String), String> {
            self.issue_with(names, None, not_before, not_after)
        }

        /// A certificate of a component for mutual TLS: like [`Ca::issue`], plus the URI
        /// `spiffe://hotel/<role>` that names its role (see [`super::internal`]); its
        /// common name is the role.
        pub fn issue_role(&self, role: &str, names: &[&str]) -> Result<(String, String), String> {
            let now = OffsetDateTime::now_utc();
            self.issue_with(
                names,
                Some(role),
                now - Duration::days(1),
                now + Duration::days(90),
            )
        }

        fn issue_with(
            &self,
            names: &[&str],
            role: Option<&str>,
            not_before: OffsetDateTime,
            not_after: OffsetDateTime,
        ) -> Result<(String, String), String> {
            let key = KeyPair::generate().map_err(|e| e.to_string())?;
            let mut p =
                CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                    .map_err(|e| e.to_string())?;
            if let Some(role) = role {
                let uri = format!("{}{role}", super::internal::ROLE_URI_PREFIX);
                p.subject_alt_names.push(SanType::URI(
                    uri.try_into().map_err(|e: rcgen::Error| e.to_string())?,
                ));
            }
            let mut dn = DistinguishedName::new();
            dn.push(
                DnType::CommonName,
                role.or(names.first().copied()).unwrap_or("hotel"),
            );
            p.distinguished_name = dn;
            p.key_usages = vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ];
            p.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
            p.not_before = not_before;
            p.not_after = not_after;
            let cert = p.signed_by(&key, &self.issuer).map_err(|e| e.to_string())?;
            Ok((cert.pem(), key.serialize_pem()))
        }

        /// Like [`Ca::issue_between`], valid from yesterday for 90 days.
        pub fn issue(&self, names: &[&str]) -> Result<(String, String), String> {
            let now = OffsetDateTime::now_utc();
            self.issue_between(names, now - Duration::days(1), now + Duration::days(90))
        }
    }

    /// The files of `hotel up --tls` in `<data-dir>/tls/`.
    #[derive(Debug, Clone)]
    pub struct Files {
        /// The CA certificate users trust (`curl --cacert`).
        pub ca_cert: PathBuf,
        /// The gateway's certificate (localhost, 127.0.0.1, ::1).
        pub gateway_cert: PathBuf,
        /// The gateway's key.
        pub gateway_key: PathBuf,
    }

    /// Creates (or reuses) the local CA in `dir` and issues a fresh gateway certificate
    /// for `localhost`, `127.0.0.1` and `::1`. Keys are written `0600`.
    pub fn ensure(dir: &Path) -> Result<Files, String> {
        let (ca, ca_cert) = open_or_create(dir)?;
        let (cert, key) = ca.issue(&LOOPBACK_NAMES)?;
        let files = Files {
            ca_cert,
            gateway_cert: dir.join("gateway.pem"),
            gateway_key: dir.join("gateway-key.pem"),
        };
        write(&files.gateway_key, &key, true)?;
        write(&files.gateway_cert, &cert, false)?;
        Ok(files)
    }

    /// The names every local certificate is valid for.
    const LOOPBACK_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

    /// The CA in `dir` (`ca.pem`, `ca-key.pem`), made on first use, and its certificate's
    /// path.
    fn open_or_create(dir: &Path) -> Result<(Ca, PathBuf), String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let ca_cert = dir.join("ca.pem");
        let ca_key = dir.join("ca-key.pem");
        let ca = match (
            std::fs::read_to_string(&ca_cert),
            std::fs::read_to_string(&ca_key),
        ) {
            (Ok(c), Ok(k)) => Ca::from_pem(CA_NAME, c, &k)?,
            _ => {
                let ca = Ca::new(CA_NAME)?;
                write(&ca_key, &ca.key_pem(), true)?;
                write(&ca_cert, &ca.cert_pem, false)?;
                ca
            }
        };
        Ok((ca, ca_cert))
    }

    /// One component's files for mutual TLS (`hotel up --internal-tls`).
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct RoleFiles {
        /// The CA every component trusts.
        pub ca: PathBuf,
        /// The certificate naming the role (`spiffe://hotel/<role>`).
        pub cert: PathBuf,
        /// Its key (`0600`).
        pub key: PathBuf,
    }

    /// Creates (or reuses) the local CA in `dir` and issues a fresh certificate for each
    /// of `roles` (valid for `localhost`, `127.0.0.1`, `::1`) in `dir/internal/`.
    pub fn ensure_roles(
        dir: &Path,
        roles: &[&str],
    ) -> Result<std::collections::BTreeMap<String, RoleFiles>, String> {
        let (ca, ca_cert) = open_or_create(dir)?;
        let internal = dir.join("internal");
        std::fs::create_dir_all(&internal).map_err(|e| format!("{}: {e}", internal.display()))?;
        let mut out = std::collections::BTreeMap::new();
        for role in roles {
            let (cert, key) = ca.issue_role(role, &LOOPBACK_NAMES)?;
            let files = RoleFiles {
                ca: ca_cert.clone(),
                cert: internal.join(format!("{role}.pem")),
                key: internal.join(format!("{role}-key.pem")),
            };
            write(&files.key, &key, true)?;
            write(&files.cert, &cert, false)?;
            out.insert((*role).to_owned(), files);
        }
        Ok(out)
    }

    /// Writes `text` to `path` through a temporary file and a rename, so a reader never
    /// sees half a file; `secret` files are `0600`.
    pub fn write(path: &Path, text: &str, secret: bool) -> Result<(), String> {
        use std::{io::Write, os::unix::fs::OpenOptionsExt};
        let tmp = path.with_extension("tmp");
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        opts.mode(if secret { 0o600 } else { 0o644 });
        let mut f = opts
            .open(&tmp)
            .map_err(|e| format!("{}: {e}", tmp.display()))?;
        f.write_all(text.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| format!("{}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn half_a_tls_pair_is_refused_naming_the_missing_key() {
        let s = TlsSettings {
            cert: Some("c.pem".into()),
            ..TlsSettings::default()
        };
        assert!(s.files().unwrap_err().starts_with("tls.key"));
        assert_eq!(TlsSettings::default().files(), Ok(None));
    }

    #[test]
    fn the_local_ca_is_made_once_its_keys_are_private_and_reissued_certificates_load() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("hotel-ca-{}", uuid::Uuid::new_v4()));
        let first = local_ca::ensure(&dir).unwrap();
        let ca = std::fs::read_to_string(&first.ca_cert).unwrap();
        let second = local_ca::ensure(&dir).unwrap();
        // The CA is reused (users trust it once); the gateway certificate is new.
        assert_eq!(std::fs::read_to_string(&second.ca_cert).unwrap(), ca);
        for key in [dir.join("ca-key.pem"), second.gateway_key.clone()] {
            let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", key.display());
        }
        load_certified_key(&second.gateway_cert, &second.gateway_key).unwrap();
        // The certificate issued by the CA loaded back from disk verifies against the
        // CA certificate written the first time.
        use rustls::client::danger::ServerCertVerifier;
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca.as_bytes()).unwrap())
            .unwrap();
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider(),
        )
        .build()
        .unwrap();
        let leaf = CertificateDer::from_pem_file(&second.gateway_cert).unwrap();
        for name in ["localhost", "127.0.0.1"] {
            verifier
                .verify_server_cert(
                    &leaf,
                    &[],
                    &rustls_pki_types::ServerName::try_from(name).unwrap(),
                    &[],
                    rustls_pki_types::UnixTime::now(),
                )
                .unwrap();
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_renewed_pair_is_swapped_in_and_a_mismatched_one_refused() {
        let dir = std::env::temp_dir().join(format!("hotel-tls-{}", uuid::Uuid::new_v4()));
        let ca = local_ca::Ca::new("test CA").unwrap();
        let (c1, k1) = ca.issue(&["localhost"]).unwrap();
        let (c2, k2) = ca.issue(&["localhost"]).unwrap();
        std::fs::create_dir_all(&dir).unwrap();
        let (cp, kp) = (dir.join("c.pem"), dir.join("k.pem"));
        local_ca::write(&cp, &c1, false).unwrap();
        local_ca::write(&kp, &k1, true).unwrap();
        let cert = ReloadingCert::load(&cp, &kp).unwrap();
        assert_eq!(cert.check(), Ok(false));
        // The certificate renewed first, its key not yet: refused, the old pair served.
        local_ca::write(&cp, &c2, false).unwrap();
        let first = cert.current.load_full();
        assert!(cert.check().unwrap_err().contains("does not fit"));
        assert!(Arc::ptr_eq(&first, &cert.current.load_full()));
        local_ca::write(&kp, &k2, true).unwrap();
        assert_eq!(cert.check(), Ok(true));
        assert!(!Arc::ptr_eq(&first, &cert.current.load_full()));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
