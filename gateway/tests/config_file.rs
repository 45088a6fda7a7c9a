//! config/gateway.toml is a working configuration: it loads and validates, and says
//! what the defaults in code say.

#![allow(
    clippy::unwrap_used,
    clippy::field_reassign_with_default,
    clippy::cloned_ref_to_slice_refs
)]

use hotel_gateway::{Config, Settings};
use std::path::Path;

#[test]
fn the_shipped_gateway_toml_lists_every_key_with_its_default() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/gateway.toml");
    hotel_testkit::assert_config_file_lists_the_defaults::<Settings>(&path);
}

#[test]
fn the_shipped_gateway_toml_loads_validates_and_matches_the_defaults() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/gateway.toml");
    let s: Settings =
        hotel_common::config::load_with_env(&Settings::default(), Some(&path), "gateway", &[])
            .unwrap_or_else(|e| panic!("{e}"));
    let file = Config::try_from(s).unwrap_or_else(|e| panic!("{e}"));
    let code = Config::try_from(Settings::default()).unwrap();
    assert_eq!(file.routes.len(), code.routes.len());
    for (f, c) in file.routes.iter().zip(&code.routes) {
        assert_eq!(
            (&f.prefix, &f.service, &f.rewrite),
            (&c.prefix, &c.service, &c.rewrite)
        );
        assert_eq!(f.policy, c.policy, "{}", f.prefix);
    }
    for (f, c) in file.routes.iter().zip(&code.routes) {
        assert_eq!(f.max_body_bytes, c.max_body_bytes, "{}", f.prefix);
    }
    assert_eq!(file.edge.limits, code.edge.limits);
    assert_eq!(
        (file.listen, file.admin_listen),
        (code.listen, code.admin_listen)
    );
    assert_eq!(
        file.services["room"].policy.breaker,
        code.services["room"].policy.breaker
    );
}
