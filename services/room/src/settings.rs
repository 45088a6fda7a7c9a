//! Configuration of a room instance: `[room]`-scoped TOML keys and
//! `HOTEL_ROOM__<KEY>` environment variables over these defaults (the keys every
//! domain service shares: [`ServiceSettings`]).

use hotel_common::service::{Role, ServiceSettings};

/// The room role, as a type: names the config section and the database file.
#[derive(Debug)]
pub struct Room;

impl Role for Room {
    const NAME: &'static str = crate::ROLE;
}

/// Everything a room instance is configured with.
pub type Settings = ServiceSettings<Room>;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use hotel_common::config::load_with_env;
    use hotel_common::process::ProcessArgs;
    use std::{path::PathBuf, time::Duration};

    #[test]
    fn environment_overrides_defaults_and_unknown_keys_fail() {
        let s: Settings = load_with_env(
            &Settings::default(),
            None,
            "room",
            &[
                ("HOTEL_ROOM__SHUTDOWN_GRACE", "3s"),
                ("HOTEL_ROOM__REGISTRY__URL", "http://127.0.0.1:8761"),
                ("HOTEL_ROOM__REGISTRY__HEARTBEAT", "500ms"),
            ],
        )
        .unwrap();
        assert_eq!(s.shutdown_grace, Duration::from_secs(3));
        assert_eq!(s.registry.url.as_deref(), Some("http://127.0.0.1:8761"));
        assert_eq!(s.registry.heartbeat, Duration::from_millis(500));
        assert_eq!(s.registry.lease, Duration::from_secs(3));
        assert_eq!(s.data_dir, PathBuf::from(".hotel"));
        let err = load_with_env(
            &Settings::default(),
            None,
            "room",
            &[("HOTEL_ROOM__LISTNE", "x")],
        )
        .unwrap_err();
        assert!(err.to_string().contains("listne"), "{err}");
    }

    #[test]
    fn a_file_with_every_key_loads() {
        let path = std::env::temp_dir().join(format!("hotel-room-{}.toml", uuid::Uuid::new_v4()));
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:7100\"\ndata_dir = \"/var/lib/hotel\"\ninstance = \"room-1\"\n\
             shutdown_grace = \"2s\"\n[registry]\nurl = \"http://127.0.0.1:8761\"\n\
             token = \"t\"\nheartbeat = \"2s\"\nlease = \"6s\"\n",
        )
        .unwrap();
        let loaded = load_with_env(&Settings::default(), Some(&path), "room", &[]);
        let _ = std::fs::remove_file(&path);
        let s: Settings = loaded.unwrap();
        assert_eq!(s.listen.port(), 7100);
        assert_eq!(s.instance, "room-1");
        assert_eq!(s.shutdown_grace, Duration::from_secs(2));
        assert_eq!(s.registry.token.as_deref(), Some("t"));
        assert_eq!(s.registry.lease, Duration::from_secs(6));
    }

    #[test]
    fn command_line_wins_over_configuration() {
        let mut s = Settings::default();
        let args = ProcessArgs {
            listen: Some("127.0.0.1:7001".parse().unwrap()),
            data_dir: Some("/tmp/x".into()),
            instance: Some("room-3".into()),
            ..ProcessArgs::default()
        };
        s.apply(&args);
        assert_eq!(s.listen.port(), 7001);
        assert_eq!(s.database_path(), PathBuf::from("/tmp/x/room.db"));
        assert_eq!(s.instance, "room-3");
    }
}
