//! Micro-benchmark of `RoutingTable::route` on a topic exchange with 10 to 100,000 bindings.
//!
//! Run: `cargo run --release -p weir-server --example route_bench`. Prints ns per routed key for
//! each binding count; with the trie the cost should stay about flat as bindings grow (a linear
//! matcher would grow 10,000×). Single-threaded, no I/O; not a test (timings never are).

use std::hint::black_box;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use weir_server::routing::exchange::{Binding, Destination, Exchange, ExchangeType};
use weir_server::routing::partitioner::Partitioner;
use weir_server::routing::router::route_produce;
use weir_server::routing::table::{Change, RoutingTable};

/// A deterministic xorshift, so that runs are comparable without a rand dependency.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

/// Patterns shaped like real ones: `tenant7.orders.*`, `tenant3.#`, `*.payments.failed`.
fn pattern(random: &mut Random, index: usize) -> String {
    let tenant = format!("tenant{index}");
    let service = ["orders", "payments", "users", "audit"][random.below(4) as usize];
    match random.below(4) {
        0 => format!("{tenant}.{service}.*"),
        1 => format!("{tenant}.#"),
        2 => format!("{tenant}.{service}.created"),
        _ => format!("*.{service}.{tenant}"),
    }
}

fn key(random: &mut Random, tenants: usize) -> String {
    let tenant = random.below(tenants as u64);
    let service = ["orders", "payments", "users", "audit"][random.below(4) as usize];
    let event = ["created", "updated", "failed"][random.below(3) as usize];
    format!("tenant{tenant}.{service}.{event}")
}

fn main() {
    route_keys();
    route_batches();
}

/// `route()` alone, as the number of topic bindings grows.
fn route_keys() {
    println!("bindings  build_ms  route_ns_per_key  destinations_per_key");
    for bindings in [10usize, 1_000, 10_000, 100_000] {
        let mut random = Random(0x9e37_79b9_7f4a_7c15);
        let mut changes = vec![Change::DeclareExchange(Exchange::new(
            "events",
            ExchangeType::Topic,
        ))];
        for index in 0..bindings {
            let destination = Destination::Topic(format!("queue-{index}"));
            let pattern = pattern(&mut random, index);
            changes.push(Change::AddBinding(Binding::new(
                "events",
                destination,
                &pattern,
            )));
        }
        let started = Instant::now();
        let mut table = RoutingTable::new();
        if let Err(error) = table.apply(&changes) {
            eprintln!("declaring {bindings} bindings failed: {error}");
            std::process::exit(1);
        }
        let build_ms = started.elapsed().as_secs_f64() * 1e3;

        let keys: Vec<String> = (0..10_000).map(|_| key(&mut random, bindings)).collect();
        let rounds = 20;
        let mut destinations = 0usize;
        let started = Instant::now();
        for _ in 0..rounds {
            for key in &keys {
                match table.route("events", Some(key.as_bytes()), &[]) {
                    Ok(topics) => destinations += black_box(topics).len(),
                    Err(error) => {
                        eprintln!("route failed: {error}");
                        std::process::exit(1);
                    }
                }
            }
        }
        let routes = (rounds * keys.len()) as f64;
        let route_ns = started.elapsed().as_secs_f64() * 1e9 / routes;
        println!(
            "{bindings:>8}  {build_ms:>8.1}  {route_ns:>16.0}  {:>20.2}",
            destinations as f64 / routes
        );
    }
}

/// The whole exchange produce path for one batch (decode, route, partition, re-encode): the issue's
/// `app` exchange, 1,000 records of 100 bytes per batch.
fn route_batches() {
    let mut table = RoutingTable::new();
    let declared = table.apply(&[
        Change::DeclareExchange(Exchange::new("app", ExchangeType::Topic)),
        Change::AddBinding(Binding::new(
            "app",
            Destination::Topic("email_queue".into()),
            "user.*",
        )),
        Change::AddBinding(Binding::new("app", Destination::Topic("audit".into()), "#")),
    ]);
    if let Err(error) = declared {
        eprintln!("declaring failed: {error}");
        std::process::exit(1);
    }
    let partitions = |topic: &str| match topic {
        "email_queue" => Some(4),
        "audit" => Some(1),
        _ => None,
    };
    println!();
    println!("compression  records_per_s  batch_us  output_batches");
    for compression in [Compression::None, Compression::Lz4, Compression::Zstd] {
        let records = batch(1_000, compression);
        let mut partitioner = Partitioner::new();
        let rounds = 200;
        let mut outputs = 0;
        let started = Instant::now();
        for _ in 0..rounds {
            match route_produce(&table, "app", &records, partitions, &mut partitioner) {
                Ok(routed) => outputs = black_box(routed).batches.len(),
                Err(error) => {
                    eprintln!("routing failed: {error}");
                    std::process::exit(1);
                }
            }
        }
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "{:<11}  {:>13.0}  {:>8.1}  {:>14}",
            format!("{compression:?}"),
            (rounds * 1_000) as f64 / seconds,
            seconds * 1e6 / rounds as f64,
            outputs
        );
    }
}

fn batch(count: usize, compression: Compression) -> Bytes {
    let keys = ["user.registered", "user.deleted", "order.created", ""];
    let records: Vec<Record> = (0..count)
        .map(|index| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: index as i64,
            sequence: index as i32 - 1,
            timestamp: 1_700_000_000_000,
            key: Some(Bytes::from_static(keys[index % keys.len()].as_bytes())),
            value: Some(Bytes::from(vec![b'x'; 100])),
            headers: Default::default(),
        })
        .collect();
    let mut buffer = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression,
    };
    if let Err(error) = RecordBatchEncoder::encode(&mut buffer, records.iter(), &options) {
        eprintln!("encoding failed: {error}");
        std::process::exit(1);
    }
    buffer.freeze()
}
