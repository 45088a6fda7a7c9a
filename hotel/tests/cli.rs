//! The `hotel` binary's command line, run as a user runs it.

use std::process::Command;

#[test]
fn help_lists_every_role() {
    let out = Command::new(env!("CARGO_BIN_EXE_hotel"))
        .arg("--help")
        .output()
        .expect("run hotel");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for role in ["registry", "gateway", "service", "up"] {
        assert!(
            text.contains(role),
            "--help does not mention {role}:\n{text}"
        );
    }
}

#[test]
fn an_unknown_subcommand_exits_non_zero() {
    let out = Command::new(env!("CARGO_BIN_EXE_hotel"))
        .arg("fly")
        .output()
        .expect("run hotel");
    assert!(!out.status.success());
}

/// `hotel certs --out DIR`: one CA, kept across runs, and a certificate per role that
/// loads as that role's identity and no other's.
#[test]
fn certs_issues_every_roles_identity_from_one_kept_ca() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("hotel-certs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let run = || {
        let out = Command::new(env!("CARGO_BIN_EXE_hotel"))
            .args(["certs", "--out"])
            .arg(&dir)
            .output()
            .expect("run hotel");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text = run();
    let ca_pem = std::fs::read(dir.join("ca.pem")).expect("ca.pem");
    assert!(
        text.contains("HOTEL_ROOM__INTERNAL_TLS__ENABLED=true"),
        "{text}"
    );
    let ca = dir.join("ca.pem");
    for role in [
        "registry", "gateway", "customer", "room", "booking", "control",
    ] {
        let cert = dir.join("internal").join(format!("{role}.pem"));
        let key = dir.join("internal").join(format!("{role}-key.pem"));
        let mode = std::fs::metadata(&key).expect("key").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{role}'s key");
        let id = hotel_common::tls::internal::Identity::load(role, &ca, &cert, &key)
            .unwrap_or_else(|e| panic!("{role}: {e}"));
        assert_eq!(id.role(), role);
        let other = if role == "room" { "booking" } else { "room" };
        assert!(hotel_common::tls::internal::Identity::load(other, &ca, &cert, &key).is_err());
    }
    run();
    assert_eq!(
        std::fs::read(dir.join("ca.pem")).expect("ca.pem"),
        ca_pem,
        "the CA is kept"
    );
    std::fs::remove_dir_all(&dir).expect("clean up");
}
