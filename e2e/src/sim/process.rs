//! What the simulator binaries (`scm-simulator`, `nexus-simulator`, `certmgmt-simulator`) share:
//! logging to stderr, the state directory other processes read, and running until SIGTERM or
//! SIGINT.

use std::path::Path;

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};

/// Logs to stderr at `RUST_LOG` (default `info`).
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// One file of a state directory.
pub struct StateFile {
    /// File name.
    pub name: &'static str,
    /// Contents.
    pub contents: String,
    /// A credential: readable by the owner only.
    pub private: bool,
}

/// Writes `files` into `dir`, then `ready` holding `base_url` last, each write-then-rename, so a
/// watcher never reads a half-written state.
pub async fn write_state(dir: &Path, files: Vec<StateFile>, base_url: &str) -> anyhow::Result<()> {
    tokio::fs::create_dir_all(dir)
        .await
        .with_context(|| format!("creating {}", dir.display()))?;
    let ready = StateFile {
        name: "ready",
        contents: base_url.to_owned(),
        private: false,
    };
    for file in files.into_iter().chain(std::iter::once(ready)) {
        let path = dir.join(file.name);
        let partial = dir.join(format!(".{}.partial", file.name));
        tokio::fs::write(&partial, file.contents)
            .await
            .with_context(|| format!("writing {}", partial.display()))?;
        if file.private {
            use std::os::unix::fs::PermissionsExt as _;
            tokio::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o600))
                .await
                .with_context(|| format!("restricting {}", partial.display()))?;
        }
        tokio::fs::rename(&partial, &path)
            .await
            .with_context(|| format!("renaming to {}", path.display()))?;
    }
    Ok(())
}

/// Waits for SIGTERM or SIGINT.
pub async fn until_terminated() -> anyhow::Result<()> {
    let mut terminate = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = terminate.recv() => {}
        result = tokio::signal::ctrl_c() => result.context("waiting for SIGINT")?,
    }
    tracing::info!("shutting down");
    Ok(())
}
