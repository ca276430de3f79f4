//! Start-up against the real binary: what a new user sees when the data dir or a port is wrong,
//! and what the log looks like when it is not a terminal.
//!
//! Runs on the test threads; each case starts its own `weir` process (at most one broker of the
//! harness at a time, see `weir_tests::Broker`), on ports from `weir_tests::free_port_range`.

use std::net::TcpListener;
use std::process::{Command, Output};

use weir_tests::{Broker, BrokerOptions};

/// Runs the binary with `args` until it exits (each case here makes it refuse to start).
fn weir(args: &[&str]) -> Output {
    Command::new(weir_tests::broker_binary().expect("the weir binary"))
        .args(args)
        // These runs test Kafka's ports; AMQP's default 5672 may be another program's.
        .args(["--amqp-listen", "none"])
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .output()
        .expect("running weir")
}

/// The start-up error (stderr) of a run that must have failed.
fn refusal(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    println!("{stderr}");
    assert!(!output.status.success(), "weir started: {stderr}");
    stderr
}

#[test]
fn a_data_dir_that_is_a_file_is_named_as_such() {
    let temp = tempfile::tempdir().unwrap();
    let file = temp.path().join("data");
    std::fs::write(&file, b"not a directory").unwrap();
    let port = weir_tests::free_port_range(2).unwrap();
    let stderr = refusal(&weir(&[
        "--data-dir",
        file.to_str().unwrap(),
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--cpus",
        "0",
        "--metrics-listen",
        "none",
    ]));
    assert!(
        stderr.contains(&format!(
            "data dir {} is a file, not a directory",
            file.display()
        )),
        "{stderr}"
    );
}

#[test]
fn a_port_held_by_another_program_names_that_program() {
    let port = weir_tests::free_port_range(2).unwrap();
    // Listening but never accepting: connects still complete (the kernel's accept queue), as
    // they would for any server.
    let _listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
    let temp = tempfile::tempdir().unwrap();
    let stderr = refusal(&weir(&[
        "--data-dir",
        temp.path().join("data").to_str().unwrap(),
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--cpus",
        "0",
        "--metrics-listen",
        "none",
    ]));
    let this_test = std::fs::read_to_string("/proc/self/comm").unwrap();
    assert!(
        stderr.contains(&format!(
            "port {port} is in use: 127.0.0.1:{port} is already in use by another process (pid {}, \
             `{}`), not a Weir broker",
            std::process::id(),
            this_test.trim_end()
        )),
        "{stderr}"
    );
}

#[test]
fn a_port_held_by_another_weir_broker_says_so() {
    let broker = Broker::start(BrokerOptions::default().cpus("0")).unwrap();
    let temp = tempfile::tempdir().unwrap();
    let stderr = refusal(&weir(&[
        "--data-dir",
        temp.path().join("data").to_str().unwrap(),
        "--listen",
        &broker.bootstrap(),
        "--cpus",
        "0",
        "--metrics-listen",
        "none",
    ]));
    let held = format!(
        "port {} is in use: {} is held by another Weir broker (pid ",
        broker.port(),
        broker.bootstrap()
    );
    assert!(stderr.contains(&held), "{stderr}");
}

/// The harness writes the broker's stdout and stderr to a file: no terminal, so no colour codes.
#[test]
fn the_log_has_no_colour_codes_when_it_is_not_a_terminal() {
    let mut broker = Broker::start(BrokerOptions::default().cpus("0")).unwrap();
    broker.stop().unwrap();
    let log = broker.log();
    assert!(log.contains("weir ready"), "{log}");
    assert!(
        !log.contains("\x1b["),
        "ANSI escape codes in the log:\n{log:?}"
    );
}
