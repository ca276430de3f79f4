//! `weir-bench loopback`: the machine's own TCP bandwidth over 127.0.0.1, the ceiling for any
//! broker on one machine (every produced byte crosses loopback once, every consumed byte again).
//! For each stream count, that many sender/receiver thread pairs move `--write-bytes` chunks for
//! the duration; receivers count what arrives. Pinning puts the senders on `--send-cpus` and the
//! receivers on `--receive-cpus`, as a broker and its clients would share the cores.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::stats::pin_current_thread;
use crate::workload::parse_duration;

#[derive(clap::Args, Debug)]
pub struct LoopbackArgs {
    /// Stream counts to measure (comma separated).
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pub streams: Vec<usize>,
    /// Bytes per write(2).
    #[arg(long, default_value = "1048576")]
    pub write_bytes: usize,
    /// How long each case runs, e.g. 3s.
    #[arg(long, default_value = "3s")]
    pub duration: String,
    /// CPUs for the sending threads, round-robin (unset: threads float).
    #[arg(long, value_delimiter = ',')]
    pub send_cpus: Vec<usize>,
    /// CPUs for the receiving threads, round-robin (unset: threads float).
    #[arg(long, value_delimiter = ',')]
    pub receive_cpus: Vec<usize>,
    /// Write the figures as JSON.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
}

#[derive(Debug, Serialize)]
pub struct LoopbackResult {
    pub streams: usize,
    pub write_bytes: usize,
    pub seconds: f64,
    pub gb_per_s: f64,
}

pub fn run(args: LoopbackArgs) -> Result<()> {
    let duration = parse_duration(&args.duration)?;
    let mut results = Vec::new();
    println!("streams  write B      GB/s");
    for &streams in &args.streams {
        let result = measure(streams, duration, &args)?;
        println!(
            "{:>7} {:>8} {:>9.2}",
            result.streams, result.write_bytes, result.gb_per_s
        );
        results.push(result);
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&results)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn measure(streams: usize, duration: Duration, args: &LoopbackArgs) -> Result<LoopbackResult> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding a loopback port")?;
    let address = listener.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    for i in 0..streams {
        let sender = TcpStream::connect(address).context("connecting over loopback")?;
        let (receiver, _) = listener.accept()?;
        let (send_cpu, receive_cpu) = (cpu_for(&args.send_cpus, i), cpu_for(&args.receive_cpus, i));
        let write_bytes = args.write_bytes;
        let stop_sending = stop.clone();
        senders.push(std::thread::spawn(move || -> std::io::Result<()> {
            if let Some(cpu) = send_cpu {
                pin_current_thread(cpu)?;
            }
            let mut sender = sender;
            let chunk = vec![0x61u8; write_bytes];
            while !stop_sending.load(Ordering::Relaxed) {
                sender.write_all(&chunk)?;
            }
            Ok(())
        }));
        receivers.push(std::thread::spawn(move || -> std::io::Result<u64> {
            if let Some(cpu) = receive_cpu {
                pin_current_thread(cpu)?;
            }
            let mut receiver = receiver;
            let mut buffer = vec![0u8; write_bytes];
            let mut total = 0u64;
            loop {
                match receiver.read(&mut buffer)? {
                    0 => return Ok(total),
                    n => total += n as u64,
                }
            }
        }));
    }
    // The span covers the connections' slow start too; it is short against the duration.
    let started = Instant::now();
    std::thread::sleep(duration);
    stop.store(true, Ordering::Relaxed);
    for sender in senders {
        sender.join().expect("sender thread")?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let mut bytes = 0;
    for receiver in receivers {
        bytes += receiver.join().expect("receiver thread")?;
    }
    Ok(LoopbackResult {
        streams,
        write_bytes: args.write_bytes,
        seconds,
        gb_per_s: bytes as f64 / seconds / 1e9,
    })
}

fn cpu_for(cpus: &[usize], i: usize) -> Option<usize> {
    (!cpus.is_empty()).then(|| cpus[i % cpus.len()])
}
