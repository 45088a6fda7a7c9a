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
