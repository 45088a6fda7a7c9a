//! API keys: who a client is.
//!
//! Clients present `Authorization: Bearer <key>` or `x-api-key: <key>`. The gateway never
//! holds keys in plain text: configuration names each key by its SHA-256 (hex), and a
//! presented key is hashed and compared against every configured digest in constant time
//! (no early exit), so response timing tells an attacker nothing about how close a guess
//! was or which entry it came near. Keys come from `[[auth.keys]]`, from a keys file
//! (`client:sha256hex` per line, `#` comments; `!` before the client revokes the key) and,
//! for a local cluster only, from `auth.dev_key` (`HOTEL_GATEWAY__AUTH__DEV_KEY`, set by
//! `hotel up`), which is hashed at startup and accepted only on a loopback listener.
//!
//! Several keys may name the same client (rotation: add the new key, move clients over,
//! revoke the old one); rate limits and metrics are per client, not per key.
//!
//! [`Keys`] is the validated key set (configuration data); [`ApiKeys`] is the live state a
//! running gateway reads on every request and swaps whole when the keys file is reloaded
//! (SIGHUP).

use crate::ratelimit::{Bucket, RateLimiter};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::{
    cell::RefCell,
    path::PathBuf,
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering},
    },
};
use subtle::{ConditionallySelectable, ConstantTimeEq};

/// Client name given to requests when authentication is off (no keys configured).
pub const ANONYMOUS: &str = "anonymous";
/// Client name given to requests on public paths that carried no valid key.
pub const PUBLIC: &str = "public";
/// Client name of `auth.dev_key`.
pub const DEV_CLIENT: &str = "dev";

/// `[auth]` as written in TOML. `Debug` hides `dev_key`, so logging the settings never
/// prints a key.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// Keys, by client. Authentication is required on every non-public path as soon as
    /// one key is configured (here, in `keys_file` or as `dev_key`).
    pub keys: Vec<KeySettings>,
    /// A file of `client:sha256hex` lines, read at startup.
    pub keys_file: Option<PathBuf>,
    /// A plain key for local development (`hotel up` generates one); accepted only while
    /// the public listener is on loopback. Never serialized.
    #[serde(skip_serializing)]
    pub dev_key: Option<String>,
    /// Paths answered without a key: exact paths, or prefixes written `"/docs/*"`.
    /// Default: the index (`/`) and the API documentation (`/api/openapi.json`,
    /// `/api/docs/*`); setting the list replaces the default.
    pub public: Vec<String>,
    /// Without any key the gateway refuses to listen on a non-loopback address unless
    /// this is `true` (an explicitly open gateway, as behind another authenticating proxy).
    pub allow_anonymous: bool,
    /// Header carrying the authenticated client name to the services; always overwritten,
    /// so a client cannot forge it.
    pub client_header: String,
}

impl std::fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthSettings")
            .field("keys", &self.keys)
            .field("keys_file", &self.keys_file)
            .field("dev_key", &self.dev_key.as_ref().map(|_| "[redacted]"))
            .field("public", &self.public)
            .field("allow_anonymous", &self.allow_anonymous)
            .field("client_header", &self.client_header)
            .finish()
    }
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            keys: Vec::new(),
            keys_file: None,
            dev_key: None,
            // The index and the API documentation (see `crate::docs`).
            public: ["/", crate::docs::OPENAPI_PATH, "/api/docs/*"]
                .map(str::to_owned)
                .to_vec(),
            allow_anonymous: false,
            client_header: "x-hotel-client".to_owned(),
        }
    }
}

/// One `[[auth.keys]]` entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KeySettings {
    /// Client name (letters, digits, `-`, `_`, `.`), used for rate limits, metrics and
    /// the client header.
    pub client: String,
    /// SHA-256 of the key, 64 hex digits (`hotel gateway hash-key` prints it).
    pub sha256: String,
    /// A revoked key is answered 401 "revoked" (and counted as such).
    #[serde(default)]
    pub revoked: bool,
}

/// SHA-256 hex of a key: what `[[auth.keys]] sha256` holds.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// One validated key.
#[derive(Debug, Clone)]
struct Entry {
    digest: [u8; 32],
    /// Index into [`Keys::clients`].
    client: u32,
    revoked: bool,
}

/// The validated key set.
#[derive(Debug, Clone, Default)]
pub struct Keys {
    entries: Vec<Entry>,
    clients: Vec<Arc<String>>,
}

/// Why a request was not authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    /// No `Authorization: Bearer` or `x-api-key`.
    Missing,
    /// A key that matches no configured digest.
    Invalid,
    /// A key that was configured and revoked; the client it belonged to.
    Revoked(u32),
}

impl AuthError {
    /// Metric label of the rejection.
    pub fn reason(self) -> &'static str {
        match self {
            AuthError::Missing => "missing_key",
            AuthError::Invalid => "invalid_key",
            AuthError::Revoked(_) => "revoked_key",
        }
    }
}

fn valid_client(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn parse_digest(hex_digest: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_digest.trim(), &mut out).ok()?;
    Some(out)
}

impl Keys {
    /// Validates `[auth]`: key digests, client names, the keys file and the dev key.
    /// `loopback` tells whether the public listener is on loopback (the dev key is
    /// refused otherwise). Errors name the key (`auth.keys[2].sha256`).
    pub fn from_settings(s: &AuthSettings, loopback: bool) -> Result<Keys, String> {
        let mut keys = Keys::default();
        for (i, k) in s.keys.iter().enumerate() {
            keys.add(&format!("auth.keys[{i}]"), &k.client, &k.sha256, k.revoked)?;
        }
        if let Some(path) = &s.keys_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("auth.keys_file: cannot read {}: {e}", path.display()))?;
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let key = format!("auth.keys_file ({} line {})", path.display(), n + 1);
                let (client, digest) = line
                    .split_once(':')
                    .ok_or_else(|| format!("{key}: expected `client:sha256hex`"))?;
                let (client, revoked) = match client.trim().strip_prefix('!') {
                    Some(c) => (c, true),
                    None => (client.trim(), false),
                };
                keys.add(&key, client, digest, revoked)?;
            }
        }
        if let Some(dev) = s.dev_key.as_deref().filter(|k| !k.is_empty()) {
            if !loopback {
                return Err(
                    "auth.dev_key: is accepted only while `listen` is a loopback \
                            address; configure hashed keys under [[auth.keys]] instead"
                        .to_owned(),
                );
            }
            if dev.len() < 16 {
                return Err("auth.dev_key: must be at least 16 characters".to_owned());
            }
            keys.add("auth.dev_key", DEV_CLIENT, &hash_key(dev), false)?;
        }
        Ok(keys)
    }

    fn add(&mut self, key: &str, client: &str, digest: &str, revoked: bool) -> Result<(), String> {
        if !valid_client(client) {
            return Err(format!(
                "{key}.client: {client:?} must be 1-64 letters, digits, '-', '_' or '.'"
            ));
        }
        let digest = parse_digest(digest)
            .ok_or_else(|| format!("{key}.sha256: must be 64 hex digits (SHA-256 of the key)"))?;
        if self.entries.iter().any(|e| e.digest == digest) {
            return Err(format!("{key}.sha256: the same key is configured twice"));
        }
        let idx = match self.clients.iter().position(|c| c.as_str() == client) {
            Some(i) => i,
            None => {
                self.clients.push(Arc::new(client.to_owned()));
                self.clients.len() - 1
            }
        };
        self.entries.push(Entry {
            digest,
            client: idx as u32,
            revoked,
        });
        Ok(())
    }

    /// Whether any key is configured (then authentication is required).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// How many keys (revoked ones included).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Every client name, by index.
    pub fn clients(&self) -> &[Arc<String>] {
        &self.clients
    }

    /// The client a presented key belongs to. Hashes the key, then compares the digest
    /// with every configured one in constant time.
    pub fn check(&self, presented: Option<&[u8]>) -> Result<u32, AuthError> {
        let Some(key) = presented.filter(|k| !k.is_empty()) else {
            return Err(AuthError::Missing);
        };
        let digest: [u8; 32] = Sha256::digest(key).into();
        match ct_find(self.entries.iter().map(|e| &e.digest), &digest) {
            Some(i) => {
                let e = &self.entries[i];
                if e.revoked {
                    Err(AuthError::Revoked(e.client))
                } else {
                    Ok(e.client)
                }
            }
            None => Err(AuthError::Invalid),
        }
    }
}

/// The index of `probe` among `digests`, comparing with every one of them in constant
/// time: the work does not depend on where (or whether) the probe matches.
pub fn ct_find<'a>(digests: impl Iterator<Item = &'a [u8; 32]>, probe: &[u8; 32]) -> Option<usize> {
    let mut found = subtle::Choice::from(0);
    let mut index = 0u64;
    for (i, d) in digests.enumerate() {
        let eq = d.ct_eq(probe);
        index = u64::conditional_select(&index, &(i as u64), eq);
        found |= eq;
    }
    bool::from(found).then_some(index as usize)
}

/// The API key header, as a constant: a `&str` name is parsed on every lookup.
pub(crate) const X_API_KEY: http::HeaderName = http::HeaderName::from_static("x-api-key");

/// The key a request presents: `Authorization: Bearer <key>` first, else `x-api-key`.
/// Borrowed from the headers, so looking it up allocates nothing.
pub fn presented_key(headers: &http::HeaderMap) -> Option<&[u8]> {
    if let Some(v) = headers.get(http::header::AUTHORIZATION) {
        let b = v.as_bytes();
        if b.len() > 7 && b[..7].eq_ignore_ascii_case(b"bearer ") {
            return Some(trim(&b[7..]));
        }
    }
    headers.get(X_API_KEY).map(|v| trim(v.as_bytes()))
}

fn trim(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|c| *c != b' ').unwrap_or(b.len());
    let end = b.iter().rposition(|c| *c != b' ').map_or(start, |e| e + 1);
    &b[start..end]
}

/// Whether `path` is listed in `auth.public` (exact, or under a `/prefix/*` entry).
pub fn is_public(public: &[String], path: &str) -> bool {
    public.iter().any(|p| match p.strip_suffix("/*") {
        Some(prefix) => {
            path == prefix
                || (path.starts_with(prefix) && path.as_bytes().get(prefix.len()) == Some(&b'/'))
        }
        None => path == p,
    })
}

/// A client as the edge knows it: its name and the header value sent to services.
#[derive(Debug, Clone)]
pub(crate) struct Client {
    pub(crate) name: Arc<String>,
    pub(crate) header: http::HeaderValue,
}

impl Client {
    pub(crate) fn new(name: Arc<String>) -> Client {
        let header =
            http::HeaderValue::from_str(&name).unwrap_or(http::HeaderValue::from_static("invalid"));
        Client { name, header }
    }
}

/// The key set and what hangs off it: the clients and their rate-limit buckets.
/// Replaced as a whole when the keys are reloaded.
#[derive(Debug)]
pub(crate) struct KeyState {
    pub(crate) keys: Keys,
    /// By client index of `keys`.
    pub(crate) clients: Vec<Client>,
    /// By client index; `None` is unlimited.
    pub(crate) buckets: Vec<Option<Arc<Bucket>>>,
}

impl KeyState {
    /// The state for `keys`; clients already in `before` keep their buckets (a reload
    /// must not refill a limited client's bucket).
    fn new(keys: Keys, limiter: &RateLimiter, before: Option<&KeyState>) -> KeyState {
        let clients: Vec<Client> = keys.clients().iter().cloned().map(Client::new).collect();
        let buckets = clients
            .iter()
            .map(|c| {
                let kept = before.and_then(|b| {
                    b.clients
                        .iter()
                        .position(|o| o.name == c.name)
                        .map(|i| b.buckets[i].clone())
                });
                kept.unwrap_or_else(|| limiter.bucket_for(&c.name))
            })
            .collect();
        KeyState {
            keys,
            clients,
            buckets,
        }
    }
}

/// The current [`KeyState`], read without locks on the request path: each worker thread
/// caches the `Arc` and reloads it only when the generation moved.
#[derive(Debug)]
struct KeyCell {
    id: u64,
    /// Bumped after each replacement: tells the threads' caches they are stale.
    generation: AtomicU64,
    slot: RwLock<Arc<KeyState>>,
}

static CELL_IDS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// (cell id, generation, state) per cell this thread has read.
    static KEY_CACHE: RefCell<Vec<(u64, u64, Arc<KeyState>)>> = const { RefCell::new(Vec::new()) };
}

impl KeyCell {
    fn new(state: KeyState) -> KeyCell {
        KeyCell {
            id: CELL_IDS.fetch_add(1, Ordering::Relaxed),
            generation: AtomicU64::new(0),
            slot: RwLock::new(Arc::new(state)),
        }
    }

    fn current(&self) -> Arc<KeyState> {
        match self.slot.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn replace(&self, state: KeyState) {
        let state = Arc::new(state);
        match self.slot.write() {
            Ok(mut g) => *g = state,
            Err(poisoned) => *poisoned.into_inner() = state,
        }
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// Runs `f` on the current state (this thread's cached copy when still current).
    fn with<R>(&self, f: impl FnOnce(&KeyState) -> R) -> R {
        let generation = self.generation.load(Ordering::Acquire);
        KEY_CACHE.with(|cache| {
            let mut cache = cache.borrow_mut();
            let i = match cache.iter().position(|e| e.0 == self.id) {
                Some(i) => {
                    if cache[i].1 != generation {
                        cache[i] = (self.id, generation, self.current());
                    }
                    i
                }
                None => {
                    cache.push((self.id, generation, self.current()));
                    cache.len() - 1
                }
            };
            f(&cache[i].2)
        })
    }
}

/// The live API keys of a running gateway: the current key set with its clients and
/// their rate-limit buckets, swapped whole on reload (SIGHUP, or [`ApiKeys::reload`]).
#[derive(Debug)]
pub struct ApiKeys {
    state: KeyCell,
    /// `[auth]` as loaded, to read the keys file again on reload.
    auth: AuthSettings,
    loopback: bool,
    /// Makes the buckets of clients that appear on reload.
    limiter: Arc<RateLimiter>,
}

impl ApiKeys {
    /// The keys validated at startup; `auth` and `loopback` are what they were validated
    /// from, to validate a reload the same way.
    pub fn new(
        keys: Keys,
        auth: AuthSettings,
        loopback: bool,
        limiter: Arc<RateLimiter>,
    ) -> ApiKeys {
        Self::succeeding(keys, auth, loopback, limiter, None)
    }

    /// Like [`ApiKeys::new`] on a configuration reload: the clients of `before` that
    /// remain keep their buckets (`before` must share `limiter`).
    pub(crate) fn succeeding(
        keys: Keys,
        auth: AuthSettings,
        loopback: bool,
        limiter: Arc<RateLimiter>,
        before: Option<&ApiKeys>,
    ) -> ApiKeys {
        let before = before.map(|b| b.state.current());
        ApiKeys {
            state: KeyCell::new(KeyState::new(keys, &limiter, before.as_deref())),
            auth,
            loopback,
            limiter,
        }
    }

    /// Whether API keys are required (some key is configured).
    pub fn required(&self) -> bool {
        self.state.with(|st| !st.keys.is_empty())
    }

    /// Runs `f` on the current key state (lock-free on the request path).
    pub(crate) fn with<R>(&self, f: impl FnOnce(&KeyState) -> R) -> R {
        self.state.with(f)
    }

    /// Reads the keys again (`[[auth.keys]]` as loaded at startup plus the keys file as
    /// it is now) and swaps them in; clients keep their rate-limit buckets. Returns the
    /// number of keys. A key set that fails validation, or that would leave no key when
    /// there were some (turning authentication off), is refused and the old one stays.
    pub fn reload(&self) -> Result<usize, String> {
        let keys = Keys::from_settings(&self.auth, self.loopback)?;
        let before = self.state.current();
        if keys.is_empty() && !before.keys.is_empty() {
            return Err(
                "auth.keys_file: the reloaded key set is empty; refusing to turn \
                        authentication off (restart without keys to do that)"
                    .to_owned(),
            );
        }
        let n = keys.len();
        self.state
            .replace(KeyState::new(keys, &self.limiter, Some(&before)));
        Ok(n)
    }
}

/// `hotel gateway hash-key` / `hotel gateway new-key`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum KeyCommand {
    /// Print the SHA-256 of a key for `[[auth.keys]] sha256` (reads the key from stdin
    /// when not given, so it stays out of shell history).
    HashKey {
        /// The key; omit to read one line from stdin.
        key: Option<String>,
    },
    /// Generate a new random key for a client and print it with its config entry.
    NewKey {
        /// Client name the key belongs to.
        #[arg(long, default_value = "default")]
        client: String,
    },
}

/// Runs a [`KeyCommand`], printing to stdout.
pub fn run_key_command(cmd: &KeyCommand) -> Result<(), hotel_common::process::BoxError> {
    match cmd {
        KeyCommand::HashKey { key } => {
            let key = match key {
                Some(k) => k.clone(),
                None => {
                    let mut line = String::new();
                    std::io::stdin().read_line(&mut line)?;
                    line.trim_end_matches(['\r', '\n']).to_owned()
                }
            };
            if key.is_empty() {
                return Err("the key is empty".into());
            }
            println!("{}", hash_key(&key));
        }
        KeyCommand::NewKey { client } => {
            if !valid_client(client) {
                return Err(format!(
                    "client {client:?} must be 1-64 letters, digits, '-', '_' or '.'"
                )
                .into());
            }
            let key = new_key();
            println!("key (give it to the client; it is not stored anywhere): {key}");
            println!();
            println!(
                "[[auth.keys]]\nclient = \"{client}\"\nsha256 = \"{}\"",
                hash_key(&key)
            );
        }
    }
    Ok(())
}

/// A fresh random key: `hk_` and 32 bytes of randomness in hex.
pub fn new_key() -> String {
    format!("hk_{}", hex::encode(rand::random::<[u8; 32]>()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn keys(entries: &[(&str, &str, bool)]) -> Keys {
        let s = AuthSettings {
            keys: entries
                .iter()
                .map(|(c, k, r)| KeySettings {
                    client: (*c).into(),
                    sha256: hash_key(k),
                    revoked: *r,
                })
                .collect(),
            ..Default::default()
        };
        Keys::from_settings(&s, true).unwrap()
    }

    #[test]
    fn a_key_is_found_by_its_digest_and_names_its_client() {
        let k = keys(&[
            ("web", "k-web-0123456789", false),
            ("ops", "k-ops-0123456789", false),
        ]);
        let ops = k.check(Some(b"k-ops-0123456789")).unwrap();
        assert_eq!(k.clients()[ops as usize].as_str(), "ops");
        assert_eq!(k.check(Some(b"k-ops-012345678")), Err(AuthError::Invalid));
        assert_eq!(k.check(None), Err(AuthError::Missing));
        assert_eq!(k.check(Some(b"")), Err(AuthError::Missing));
    }

    #[test]
    fn a_revoked_key_is_refused_as_revoked_while_the_clients_other_key_works() {
        let k = keys(&[
            ("web", "old-key-0123456789", true),
            ("web", "new-key-0123456789", false),
        ]);
        assert!(matches!(
            k.check(Some(b"old-key-0123456789")),
            Err(AuthError::Revoked(0))
        ));
        assert_eq!(k.check(Some(b"new-key-0123456789")), Ok(0));
        assert_eq!(k.clients().len(), 1);
    }

    #[test]
    fn constant_time_search_finds_every_position_and_only_exact_matches() {
        let ds: Vec<[u8; 32]> = (0u8..5).map(|i| [i; 32]).collect();
        for i in 0..5u8 {
            assert_eq!(ct_find(ds.iter(), &[i; 32]), Some(i as usize));
        }
        // Differs only in the last byte, then only in the first: both are misses.
        let mut near = [3u8; 32];
        near[31] = 4;
        assert_eq!(ct_find(ds.iter(), &near), None);
        near = [3u8; 32];
        near[0] = 9;
        assert_eq!(ct_find(ds.iter(), &near), None);
        assert_eq!(ct_find(std::iter::empty(), &[0; 32]), None);
    }

    #[test]
    fn bearer_and_x_api_key_are_both_read_and_bearer_wins() {
        let mut h = http::HeaderMap::new();
        assert_eq!(presented_key(&h), None);
        h.insert("x-api-key", "  abc ".parse().unwrap());
        assert_eq!(presented_key(&h), Some(&b"abc"[..]));
        h.insert(http::header::AUTHORIZATION, "bearer xyz".parse().unwrap());
        assert_eq!(presented_key(&h), Some(&b"xyz"[..]));
        h.insert(
            http::header::AUTHORIZATION,
            "Basic Zm9vOmJhcg==".parse().unwrap(),
        );
        assert_eq!(presented_key(&h), Some(&b"abc"[..]));
    }

    #[test]
    fn bad_digests_client_names_and_a_public_dev_key_are_refused_naming_the_key() {
        let mut s = AuthSettings::default();
        s.keys.push(KeySettings {
            client: "web".into(),
            sha256: "abc".into(),
            revoked: false,
        });
        assert!(
            Keys::from_settings(&s, true)
                .unwrap_err()
                .starts_with("auth.keys[0].sha256")
        );
        s.keys[0].sha256 = hash_key("x");
        s.keys[0].client = "we b".into();
        assert!(
            Keys::from_settings(&s, true)
                .unwrap_err()
                .starts_with("auth.keys[0].client")
        );
        let s = AuthSettings {
            dev_key: Some("hk_dev_0123456789abcdef".into()),
            ..Default::default()
        };
        assert!(
            Keys::from_settings(&s, false)
                .unwrap_err()
                .starts_with("auth.dev_key")
        );
        let k = Keys::from_settings(&s, true).unwrap();
        assert_eq!(k.check(Some(b"hk_dev_0123456789abcdef")), Ok(0));
        assert!(!format!("{s:?}").contains("hk_dev_0123456789abcdef"));
        assert_eq!(k.clients()[0].as_str(), DEV_CLIENT);
    }

    #[test]
    fn a_keys_file_adds_keys_and_revokes_with_a_bang() {
        let dir = hotel_testkit::TempDir::new("gw-keys");
        let p = dir.join("keys");
        std::fs::write(
            &p,
            format!(
                "# clients\nmobile:{}\n!mobile:{}\n\n",
                hash_key("mobile-new-0123456789"),
                hash_key("mobile-old-0123456789")
            ),
        )
        .unwrap();
        let s = AuthSettings {
            keys_file: Some(p.clone()),
            ..Default::default()
        };
        let k = Keys::from_settings(&s, false).unwrap();
        assert_eq!(k.check(Some(b"mobile-new-0123456789")), Ok(0));
        assert!(matches!(
            k.check(Some(b"mobile-old-0123456789")),
            Err(AuthError::Revoked(_))
        ));
        std::fs::write(&p, "mobile deadbeef\n").unwrap();
        let e = Keys::from_settings(&s, false).unwrap_err();
        assert!(e.contains("line 1"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn new_keys_are_random_and_hash_to_64_hex_digits() {
        let (a, b) = (new_key(), new_key());
        assert_ne!(a, b);
        assert!(a.starts_with("hk_") && a.len() == 67, "{a}");
        let h = hash_key(&a);
        assert_eq!(h.len(), 64);
        assert!(parse_digest(&h).is_some());
        // The well-known SHA-256 of "abc".
        assert_eq!(
            hash_key("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn public_paths_match_exactly_or_below_a_star_prefix() {
        let p = vec!["/".to_owned(), "/api/docs/*".to_owned()];
        assert!(is_public(&p, "/"));
        assert!(!is_public(&p, "/api/rooms"));
        assert!(is_public(&p, "/api/docs"));
        assert!(is_public(&p, "/api/docs/openapi.json"));
        assert!(!is_public(&p, "/api/docsx"));
    }
}
