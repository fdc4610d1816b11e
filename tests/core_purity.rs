//! The decision core stays pure: `core/` (the `liaison-core` crate) does no
//! IO. Its `Cargo.toml` keeps runtime, storage, network and TLS crates out
//! (checked here on the resolved dependency tree), and its sources use
//! nothing of the standard library that reaches the disk, the network, the
//! environment, other processes, threads or the clock (checked here on the
//! text). A breach fails CI, so the boundary stays true.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Crates the core must never depend on, even indirectly.
const FORBIDDEN_CRATES: &[&str] = &[
    "tokio",
    "sled",
    "async-imap",
    "rustls",
    "tokio-rustls",
    "webpki-roots",
    "async-native-tls",
    "native-tls",
    "openssl",
    "hyper",
    "reqwest",
    "mio",
    "socket2",
    "postgres",
    "tokio-postgres",
];

/// Text that would mean IO, a clock or threads in the core's sources.
const FORBIDDEN_TEXT: &[&str] = &[
    "std::fs",
    "std::net",
    "std::env",
    "std::process",
    "std::thread",
    "SystemTime",
    "Instant",
    "UNIX_EPOCH",
    "std::io::stdin",
    "std::io::stdout",
    "tokio",
    "include_bytes!(",
    "include_str!(",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn core_sources_do_no_io_and_read_no_clock() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("core/src");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    assert!(
        files.len() > 20,
        "found only {} files under {}",
        files.len(),
        root.display()
    );
    let mut breaches = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            // A comment may name what the core does not do.
            let code = line.split("//").next().unwrap_or("");
            for bad in FORBIDDEN_TEXT {
                if code.contains(bad) {
                    breaches.push(format!(
                        "{}:{}: `{bad}`: {}",
                        file.display(),
                        n + 1,
                        line.trim()
                    ));
                }
            }
        }
    }
    assert!(
        breaches.is_empty(),
        "the core must stay pure:\n{}",
        breaches.join("\n")
    );
}

#[test]
fn core_depends_on_no_runtime_storage_network_or_tls_crate() {
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "-p",
            "liaison-core",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo tree");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8(out.stdout).unwrap();
    let crates: Vec<&str> = tree
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(
        crates.contains(&"liaison-core") && crates.contains(&"mail-parser"),
        "{tree}"
    );
    let found: Vec<&&str> = FORBIDDEN_CRATES
        .iter()
        .filter(|c| crates.contains(c))
        .collect();
    assert!(
        found.is_empty(),
        "liaison-core depends on {found:?}:\n{tree}"
    );
    // lettre is there for building messages only: its transports stay out.
    let lettre = Command::new(env!("CARGO"))
        .args([
            "tree",
            "-p",
            "liaison-core",
            "-e",
            "features",
            "-i",
            "lettre",
            "--prefix",
            "none",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo tree");
    let features = String::from_utf8_lossy(&lettre.stdout);
    for transport in ["smtp-transport", "sendmail-transport", "file-transport"] {
        assert!(
            !features.contains(&format!("\"{transport}\"")),
            "lettre transport `{transport}` in the core:\n{features}"
        );
    }
}
