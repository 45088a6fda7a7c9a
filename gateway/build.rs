//! Unpacks the Swagger UI files the docs page serves (`/api/docs`) from the zip archive
//! that `utoipa-swagger-ui-vendored` holds, into `OUT_DIR`, so `src/docs/swagger.rs`
//! can `include_bytes!` them: the page works offline and nothing is fetched at build or
//! run time.
//!
//! The archive is a plain zip (stored or deflated entries, no zip64), so its central
//! directory is read here directly; `flate2` inflates.

use std::{io::Read, path::PathBuf};

/// The files of `swagger-ui-<version>/dist/` the page uses.
const FILES: [&str; 5] = [
    "swagger-ui.css",
    "index.css",
    "swagger-ui-bundle.js",
    "swagger-ui-standalone-preset.js",
    "favicon-32x32.png",
];

fn u16_at(b: &[u8], at: usize) -> usize {
    usize::from(u16::from_le_bytes([b[at], b[at + 1]]))
}

fn u32_at(b: &[u8], at: usize) -> usize {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]) as usize
}

/// The entries of the archive whose name ends in `/dist/<file>`: (file, contents).
fn dist_files(zip: &[u8]) -> Vec<(String, Vec<u8>)> {
    // End of central directory: signature, then (at +10) entry count, (+16) offset.
    let eocd = (0..zip.len().saturating_sub(21))
        .rev()
        .find(|&i| zip[i..i + 4] == [0x50, 0x4b, 0x05, 0x06])
        .expect("the Swagger UI archive has no end of central directory");
    let entries = u16_at(zip, eocd + 10);
    let mut at = u32_at(zip, eocd + 16);
    let mut out = Vec::new();
    for _ in 0..entries {
        assert_eq!(
            zip[at..at + 4],
            [0x50, 0x4b, 0x01, 0x02],
            "bad central header"
        );
        let method = u16_at(zip, at + 10);
        let compressed = u32_at(zip, at + 20);
        let size = u32_at(zip, at + 24);
        let (name_len, extra_len, comment_len) = (
            u16_at(zip, at + 28),
            u16_at(zip, at + 30),
            u16_at(zip, at + 32),
        );
        let local = u32_at(zip, at + 42);
        let name = String::from_utf8_lossy(&zip[at + 46..at + 46 + name_len]).into_owned();
        at += 46 + name_len + extra_len + comment_len;
        let Some(file) = FILES
            .iter()
            .find(|f| name.ends_with(&format!("/dist/{f}")) && name.matches("/dist/").count() == 1)
        else {
            continue;
        };
        if name.contains("/flavors/") {
            continue;
        }
        assert_eq!(
            zip[local..local + 4],
            [0x50, 0x4b, 0x03, 0x04],
            "bad local header"
        );
        let data = local + 30 + u16_at(zip, local + 26) + u16_at(zip, local + 28);
        let raw = &zip[data..data + compressed];
        let bytes = match method {
            0 => raw.to_vec(),
            8 => {
                let mut v = Vec::with_capacity(size);
                flate2::read::DeflateDecoder::new(raw)
                    .read_to_end(&mut v)
                    .expect("a Swagger UI file does not inflate");
                v
            }
            m => panic!("{name}: unsupported zip compression method {m}"),
        };
        assert_eq!(bytes.len(), size, "{name}: wrong size after inflating");
        out.push(((*file).to_owned(), bytes));
    }
    out
}

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let files = dist_files(utoipa_swagger_ui_vendored::SWAGGER_UI_VENDORED);
    for f in FILES {
        let (_, bytes) = files
            .iter()
            .find(|(n, _)| n == f)
            .unwrap_or_else(|| panic!("{f} is not in the vendored Swagger UI archive"));
        std::fs::write(out.join(f), bytes).expect("OUT_DIR is writable");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
