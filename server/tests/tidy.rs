//! Tidy checks over the source tree (rust-analyzer's `tidy.rs` habit): plain reads of the files,
//! no build tricks.
//!
//! The layering rule (docs/architecture.md, Architecture Invariant): the core (`shard/`,
//! `partition.rs`, `metadata.rs`, `routing/`, `config.rs`, `ports.rs`, `groups/`, and every other
//! module outside the protocol folders) imports no protocol module. Protocols (`kafka/`, later
//! `amqp/`), the composition root (`lib.rs`, `main.rs`) and the admin CLI (`cli.rs`, `cli/`) may.
//! RecordBatch v2 is Weir's storage format, so `kafka_protocol::records` and
//! `kafka_protocol::compression` are allowed everywhere.

use std::path::{Path, PathBuf};

/// Text that names a protocol module from inside the core.
const PROTOCOL_PATHS: &[&str] = &[
    "crate::kafka",
    "super::kafka",
    "kafka_protocol::messages",
    "kafka_protocol::protocol",
    "kafka_protocol::error",
];

/// Files and folders (relative to `server/src`) that may use a protocol.
const PROTOCOL_SIDE: &[&str] = &["kafka/", "amqp/", "cli/", "cli.rs", "lib.rs", "main.rs"];

#[test]
fn the_core_imports_no_protocol() {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let offences = protocol_imports_in_core(&source);
    assert!(
        offences.is_empty(),
        "core modules must not import a protocol (docs/architecture.md); found:\n{}",
        offences.join("\n")
    );
}

/// Every `file:line: text` of the core that names a protocol module.
fn protocol_imports_in_core(source: &Path) -> Vec<String> {
    let mut offences = Vec::new();
    for path in rust_files(source) {
        let relative = path
            .strip_prefix(source)
            .expect("under src")
            .to_string_lossy()
            .replace('\\', "/");
        if is_protocol_side(&relative) {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("readable source file");
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            let names_protocol = PROTOCOL_PATHS.iter().any(|path| line.contains(path));
            if names_protocol {
                offences.push(format!("server/src/{relative}:{}: {line}", number + 1));
            }
        }
    }
    offences
}

fn is_protocol_side(relative: &str) -> bool {
    PROTOCOL_SIDE.iter().any(|allowed| {
        relative == *allowed || (allowed.ends_with('/') && relative.starts_with(allowed))
    })
}

fn rust_files(directory: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![directory.to_path_buf()];
    while let Some(directory) = pending.pop() {
        for entry in std::fs::read_dir(&directory).expect("readable source folder") {
            let path = entry.expect("readable folder entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|extension| extension == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The rule itself, on a made-up tree: a core file that names a protocol is reported with its
/// line; protocol folders and the composition root are not.
#[test]
fn the_rule_reports_file_and_line() {
    let directory = tempfile::tempdir().expect("temporary folder");
    let source = directory.path();
    let write = |relative: &str, text: &str| {
        let path = source.join(relative);
        std::fs::create_dir_all(path.parent().expect("has a parent")).expect("folder");
        std::fs::write(path, text).expect("file");
    };
    write("kafka/produce.rs", "use crate::kafka::codec;\n");
    write("lib.rs", "pub mod kafka;\nuse crate::kafka::connection;\n");
    write(
        "routing/broker.rs",
        "use crate::partition;\nuse crate::kafka::error_codes;\n",
    );
    write(
        "routing/records.rs",
        "use kafka_protocol::records::Compression;\n",
    );
    write("shard/mesh.rs", "use crate::kafka::group_apis::GroupJob;\n");
    write(
        "groups/join.rs",
        "use bytes::Bytes;\nuse kafka_protocol::messages::JoinGroupRequest;\n",
    );
    write(
        "metadata.rs",
        "fn f() -> kafka_protocol::error::ResponseError { todo!() }\n",
    );
    assert_eq!(
        protocol_imports_in_core(source),
        [
            "server/src/groups/join.rs:2: use kafka_protocol::messages::JoinGroupRequest;",
            "server/src/metadata.rs:1: fn f() -> kafka_protocol::error::ResponseError { todo!() }",
            "server/src/routing/broker.rs:2: use crate::kafka::error_codes;",
            "server/src/shard/mesh.rs:1: use crate::kafka::group_apis::GroupJob;",
        ]
    );
}
