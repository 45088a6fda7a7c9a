//! Configuration of a customer instance: `[customer]`-scoped TOML keys and
//! `HOTEL_CUSTOMER__<KEY>` environment variables over these defaults (the keys every
//! domain service shares: [`ServiceSettings`]).

use hotel_service::{PersonalData, Role, ServiceSettings};

/// The customer role, as a type: names the config section and the database file.
#[derive(Debug)]
pub struct Customer;

impl Role for Customer {
    const NAME: &'static str = crate::ROLE;
    /// Customers are personal data: always `private, no-store`, no `[cache]` keys.
    type Cache = PersonalData;
}

/// Everything a customer instance is configured with.
pub type Settings = ServiceSettings<Customer>;

// How the keys load, what they default to and how the command line wins is tested once,
// in `hotel_service::settings`; here only what is the customer service's own.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use hotel_common::config::load_with_env;
    use std::{path::PathBuf, time::Duration};

    #[test]
    fn the_shipped_config_file_lists_every_key_with_its_default() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/customer.toml");
        hotel_testkit::assert_config_file_lists_the_defaults::<Settings>(&path);
    }

    #[test]
    fn keys_come_from_the_customer_environment_prefix_and_the_database_is_customer_db() {
        let s: Settings = load_with_env(
            &Settings::default(),
            None,
            "customer",
            &[
                ("HOTEL_CUSTOMER__SHUTDOWN_GRACE", "3s"),
                ("HOTEL_CUSTOMER__DATA_DIR", "/tmp/x"),
            ],
        )
        .unwrap();
        assert_eq!(s.shutdown_grace, Duration::from_secs(3));
        assert_eq!(s.database_path(), PathBuf::from("/tmp/x/customer.db"));
    }
}
