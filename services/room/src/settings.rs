//! Configuration of a room instance: `[room]`-scoped TOML keys and
//! `HOTEL_ROOM__<KEY>` environment variables over these defaults (the keys every
//! domain service shares: [`ServiceSettings`]).

use hotel_service::{Role, ServiceSettings, SharedCache};

/// The room role, as a type: names the config section and the database file.
#[derive(Debug)]
pub struct Room;

impl Role for Room {
    const NAME: &'static str = crate::ROLE;
    /// Rooms are public: shared caches may keep them (`[cache]` says how long).
    type Cache = SharedCache;
}

/// Everything a room instance is configured with.
pub type Settings = ServiceSettings<Room>;

// How the keys load, what they default to and how the command line wins is tested once,
// in `hotel_service::settings`; here only what is the room service's own.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use hotel_common::config::load_with_env;
    use std::{path::PathBuf, time::Duration};

    #[test]
    fn the_shipped_config_file_lists_every_key_with_its_default() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/room.toml");
        hotel_testkit::assert_config_file_lists_the_defaults::<Settings>(&path);
        let s: Settings = load_with_env(&Settings::default(), Some(&path), "room", &[]).unwrap();
        assert_eq!(s.instance, "room");
    }

    #[test]
    fn keys_come_from_the_room_environment_prefix_and_the_database_is_room_db() {
        let s: Settings = load_with_env(
            &Settings::default(),
            None,
            "room",
            &[
                ("HOTEL_ROOM__SHUTDOWN_GRACE", "3s"),
                ("HOTEL_ROOM__DATA_DIR", "/tmp/x"),
            ],
        )
        .unwrap();
        assert_eq!(s.shutdown_grace, Duration::from_secs(3));
        assert_eq!(s.database_path(), PathBuf::from("/tmp/x/room.db"));
    }
}
