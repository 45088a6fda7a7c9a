//! Layered configuration: defaults < TOML file < `HOTEL_`-prefixed environment.
//!
//! Raw config structs use `#[serde(deny_unknown_fields)]` and human durations
//! (`humantime_serde`), so a typo in a key or a value fails loudly. Nested keys come from
//! the environment with `__` as separator: `HOTEL_REGISTRY__TOKEN=...` sets
//! `registry.token`.

use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use std::{path::Path, time::Duration};

/// Prefix of every environment variable that overrides configuration.
pub const ENV_PREFIX: &str = "HOTEL_";

/// How a service instance finds the registry. Whether it registers at all is decided by
/// `url` being set, so a lone `hotel service room` runs without any registry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RegistryLink {
    /// Base URL of the registry (`http://127.0.0.1:8761`); `None` means do not register.
    #[serde(default)]
    pub url: Option<String>,
    /// Bearer token the registry requires for writes (register, heartbeat, deregister).
    #[serde(default)]
    pub token: Option<String>,
    /// How often the instance renews its lease; well under `lease` so one lost heartbeat
    /// does not expire it.
    #[serde(with = "humantime_serde", default = "RegistryLink::default_heartbeat")]
    pub heartbeat: Duration,
    /// How long the registry keeps the instance without a heartbeat before dropping it.
    #[serde(with = "humantime_serde", default = "RegistryLink::default_lease")]
    pub lease: Duration,
}

impl RegistryLink {
    fn default_heartbeat() -> Duration {
        Duration::from_secs(1)
    }

    fn default_lease() -> Duration {
        Duration::from_secs(3)
    }
}

impl Default for RegistryLink {
    fn default() -> Self {
        RegistryLink {
            url: None,
            token: None,
            heartbeat: Self::default_heartbeat(),
            lease: Self::default_lease(),
        }
    }
}

/// A configuration that could not be loaded; `Display` is one line naming the key.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

impl From<figment::Error> for ConfigError {
    fn from(e: figment::Error) -> Self {
        // figment's Display already names the key path and the source ("in file x.toml").
        let mut msg = e.to_string();
        if let Some(src) = e.metadata.as_ref().map(|m| m.name.to_string())
            && !msg.contains(&src)
        {
            msg.push_str(&format!(" (from {src})"));
        }
        ConfigError(msg.replace('\n', " "))
    }
}

/// Loads `T` from its defaults, then the TOML file at `file` (which must exist when given),
/// then environment variables named `HOTEL_<SECTION>__<KEY>` restricted to `section`.
///
/// `section` scopes the environment: with `section = "gateway"`, `HOTEL_GATEWAY__LISTEN`
/// sets `listen`. Values from the command line are applied by the caller afterwards.
pub fn load<T>(defaults: &T, file: Option<&Path>, section: &str) -> Result<T, ConfigError>
where
    T: Serialize + DeserializeOwned,
{
    let mut fig = Figment::from(Serialized::defaults(defaults));
    if let Some(path) = file {
        if !path.exists() {
            return Err(ConfigError(format!(
                "config file {} does not exist",
                path.display()
            )));
        }
        fig = fig.merge(Toml::file(path));
    }
    let prefix = format!("{ENV_PREFIX}{}__", section.to_ascii_uppercase());
    fig = fig.merge(Env::prefixed(&prefix).split("__").lowercase(true));
    Ok(fig.extract()?)
}

/// Like [`load`] but the environment is given explicitly (tests must not mutate the
/// process environment).
pub fn load_with_env<T>(
    defaults: &T,
    file: Option<&Path>,
    section: &str,
    env: &[(&str, &str)],
) -> Result<T, ConfigError>
where
    T: Serialize + DeserializeOwned,
{
    let mut fig = Figment::from(Serialized::defaults(defaults));
    if let Some(path) = file {
        fig = fig.merge(Toml::file(path));
    }
    let prefix = format!("{ENV_PREFIX}{}__", section.to_ascii_uppercase());
    let mut dict = figment::value::Dict::new();
    for (k, v) in env {
        if let Some(rest) = k.strip_prefix(&prefix) {
            let path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
            insert_path(&mut dict, &path, v);
        }
    }
    fig = fig.merge(Serialized::defaults(dict));
    Ok(fig.extract()?)
}

fn insert_path(dict: &mut figment::value::Dict, path: &[String], v: &str) {
    use figment::value::Value;
    match path {
        [] => {}
        [last] => {
            let val: Value = v.parse().unwrap_or_else(|_| Value::from(v.to_owned()));
            dict.insert(last.clone(), val);
        }
        [first, rest @ ..] => {
            let entry = dict
                .entry(first.clone())
                .or_insert_with(|| Value::from(figment::value::Dict::new()));
            if let Value::Dict(_, inner) = entry {
                insert_path(inner, rest, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::time::Duration;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Demo {
        #[serde(with = "humantime_serde")]
        timeout: Duration,
        port: u16,
    }

    fn defaults() -> Demo {
        Demo {
            timeout: Duration::from_millis(250),
            port: 1,
        }
    }

    #[test]
    fn file_overrides_defaults_and_env_overrides_file() {
        let dir = tempdir();
        let path = dir.join("demo.toml");
        std::fs::write(&path, "timeout = \"2s\"\nport = 5\n").unwrap();
        let d: Demo = load_with_env(
            &defaults(),
            Some(&path),
            "demo",
            &[("HOTEL_DEMO__PORT", "7")],
        )
        .unwrap();
        assert_eq!(
            d,
            Demo {
                timeout: Duration::from_secs(2),
                port: 7
            }
        );
    }

    #[test]
    fn unknown_key_is_rejected_with_its_name() {
        let dir = tempdir();
        let path = dir.join("demo.toml");
        std::fs::write(&path, "prot = 5\n").unwrap();
        let err = load_with_env(&defaults(), Some(&path), "demo", &[]).unwrap_err();
        assert!(err.to_string().contains("prot"), "{err}");
        assert!(!err.to_string().contains('\n'));
    }

    #[test]
    fn bad_duration_names_the_key() {
        let err = load_with_env(
            &defaults(),
            None,
            "demo",
            &[("HOTEL_DEMO__TIMEOUT", "fast")],
        )
        .unwrap_err();
        assert!(err.to_string().contains("timeout"), "{err}");
    }

    fn tempdir() -> hotel_testkit::TempDir {
        hotel_testkit::TempDir::new("config")
    }
}
