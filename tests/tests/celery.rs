//! Celery 5.7 with its AMQP broker URL (kombu over py-amqp) and the rpc:// result backend, end to
//! end: a real `celery -A tasks worker` process (tests/clients/celery/tasks.py) runs `add`, and
//! tests/clients/celery_add.py gets `add.delay(2, 2).get()` == 4 and 20 more results back.
//! `WEIR_AMQP_TARGET=rabbitmq` runs the same against RabbitMQ (to prove the test itself).

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result};
use weir_tests::rabbitmq::AmqpTarget;
use weir_tests::{client_path, python_binary, run, summary, BrokerOptions, CLIENT_TIMEOUT};

/// A `celery worker` in its own process group, killed with its children when dropped; its log
/// is printed then (libtest shows it for a failing test).
struct Worker {
    child: Child,
    log_path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Worker {
    fn start(url: &str) -> Result<Worker> {
        let dir = tempfile::tempdir()?;
        let log_path = dir.path().join("worker.log");
        let log = File::create(&log_path)?;
        let python = python_binary()?;
        let child = Command::new(&python)
            .args(["-m", "celery", "-A", "tasks", "worker", "--pool=solo"])
            .args(["--loglevel=info", "--hostname=weir-test@%h"])
            .current_dir(client_path("celery"))
            .env("WEIR_AMQP_URL", url)
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .process_group(0)
            .spawn()
            .with_context(|| format!("spawning {} -m celery worker", python.display()))?;
        Ok(Worker {
            child,
            log_path,
            _dir: dir,
        })
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // SAFETY: kill(2) on this worker's own process group; no memory is involved.
        unsafe {
            libc::kill(-(self.child.id() as i32), libc::SIGKILL);
        }
        let _ = self.child.wait();
        let log = std::fs::read(&self.log_path).unwrap_or_default();
        eprintln!("--- celery worker log ---\n{}", weir_tests::tail(&log));
    }
}

#[test]
fn celery_runs_add_through_the_rpc_backend() -> Result<()> {
    let target = AmqpTarget::start(BrokerOptions::default())?;
    let url = target.url();
    let _worker = Worker::start(&url)?;
    let mut driver = Command::new(python_binary()?);
    driver
        .arg(client_path("celery_add.py"))
        .env("WEIR_AMQP_URL", &url)
        .env("PYTHONUNBUFFERED", "1");
    let result = summary(&run(&mut driver, None, CLIENT_TIMEOUT)?)?;
    assert_eq!(result["add_2_2"], 4, "{result}");
    assert_eq!(result["batch"], 20, "{result}");
    Ok(())
}
