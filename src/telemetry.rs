//! Structured logging via `tracing`: JSON for collectors or text for people.

use std::io::IsTerminal;

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::LogFormat;

/// The log filter could not be parsed.
#[derive(Debug, thiserror::Error)]
#[error("invalid log filter {filter:?}")]
pub struct InvalidLogFilter {
    filter: String,
    #[source]
    source: tracing_subscriber::filter::ParseError,
}

/// Installs the global subscriber. Call once, first thing in `main`.
pub fn init(format: LogFormat, filter: &str) -> Result<(), InvalidLogFilter> {
    let env_filter = EnvFilter::try_new(filter).map_err(|source| InvalidLogFilter {
        filter: filter.to_owned(),
        source,
    })?;
    let registry = tracing_subscriber::registry().with(env_filter);
    match format {
        LogFormat::Json => registry
            .with(fmt::layer().json().flatten_event(true).with_current_span(false))
            .init(),
        LogFormat::Text => registry
            .with(
                fmt::layer()
                    .with_target(true)
                    .with_ansi(std::io::stdout().is_terminal()),
            )
            .init(),
    }
    Ok(())
}
