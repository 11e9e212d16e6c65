//! The backend conformance suite (`pki_operator_e2e::conformance`) run against every CA backend
//! (with its simulator, or in process for the local `ca`), plus each client's error, retry and
//! crash-recovery behaviour. Every trial starts its own simulator, so counters and faults never
//! leak between tests.

// A test binary with its own harness: a panic is a test failure.
#![allow(clippy::expect_used)]

mod ca;
mod nexus;
mod scm;

use std::{
    io::Write,
    sync::{Arc, Mutex},
};

use anyhow::{Result, ensure};
use libtest_mimic::{Arguments, Failed, Trial};

fn main() -> std::process::ExitCode {
    let args = Arguments::from_args();
    let mut trials = scm::trials();
    trials.extend(nexus::trials());
    trials.extend(ca::trials());
    libtest_mimic::run(&args, trials).exit_code()
}

/// Runs `future` on a fresh single-threaded runtime.
pub fn run<F: Future<Output = Result<()>>>(future: F) -> Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(future)
}

/// A trial whose error chain becomes the failure message.
pub fn trial(name: String, test: impl FnOnce() -> Result<()> + Send + 'static) -> Trial {
    Trial::test(name, move || test().map_err(|e| Failed::from(format!("{e:#}"))))
}

/// A `MakeWriter` appending to a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs `body` with every log level (reqwest, hyper and rustls included) captured; returns the
/// logs.
pub fn capture_logs(body: impl FnOnce() -> Result<()>) -> Result<String> {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, body)?;
    let logs = String::from_utf8(
        captured
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone(),
    )?;
    ensure!(
        !logs.is_empty(),
        "nothing was logged, so the check would prove nothing"
    );
    Ok(logs)
}

/// Fails when any secret (or any long line of a PEM secret) appears in the logs or messages.
pub fn ensure_no_secrets(logs: &str, messages: &[String], secrets: &[String]) -> Result<()> {
    let everything = format!("{logs}\n{}", messages.join("\n"));
    for secret in secrets {
        for line in secret.lines().filter(|l| l.len() > 20 && !l.starts_with("-----")) {
            ensure!(
                !everything.contains(line),
                "key material appeared in logs or errors"
            );
        }
        ensure!(
            !everything.contains(secret.trim()),
            "a secret appeared in logs or errors"
        );
    }
    ensure!(
        !everything.contains("PRIVATE KEY"),
        "a private key appeared in logs or errors"
    );
    Ok(())
}
