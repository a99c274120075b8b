//! Process-wide `tracing` set-up: structured lines on stderr, text or JSON, with a filter that the
//! agent can change live (the ConfigMap's `log-level`).

use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _, Registry, reload};

use crate::cli::{LogArgs, LogFormat};

/// Changes the log filter of the running process.
#[derive(Clone)]
pub struct LogControl {
    handle: reload::Handle<EnvFilter, Registry>,
    current: std::sync::Arc<std::sync::Mutex<String>>,
}

impl LogControl {
    /// The filter in force.
    pub fn current(&self) -> String {
        self.current.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Switches to `filter` (already validated) if it differs from the current one.
    pub fn set(&self, filter: &str) {
        let Ok(mut current) = self.current.lock() else { return };
        if *current == filter {
            return;
        }
        match EnvFilter::try_new(filter).map(|f| self.handle.reload(f)) {
            Ok(Ok(())) => {
                tracing::info!(from = %current, to = filter, "log level changed");
                *current = filter.to_owned();
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot change the log level"),
            Err(e) => tracing::warn!(error = %e, filter, "invalid log filter"),
        }
    }
}

impl LogControl {
    /// A control over a filter no subscriber uses, for tests of code that changes the level: it
    /// keeps the filter it is given and reports the change as `init`'s does.
    #[cfg(test)]
    pub fn detached(filter: &str) -> Self {
        let (layer, handle) = reload::Layer::<EnvFilter, Registry>::new(EnvFilter::new(filter));
        // The handle reloads only while its layer lives: keep the layer for the process.
        std::mem::forget(layer);
        Self { handle, current: std::sync::Arc::new(std::sync::Mutex::new(filter.to_owned())) }
    }
}

/// Installs the global subscriber.
pub fn init(args: &LogArgs) -> anyhow::Result<LogControl> {
    let (filter, handle) = reload::Layer::new(EnvFilter::try_new(&args.log_level)?);
    let format = match args.log_format {
        // Colours only on a terminal: a log file or `kubectl logs` gets plain text.
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer().json().with_writer(std::io::stderr).boxed(),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(format)
        .try_init()
        .map_err(|e| anyhow::anyhow!("cannot install the logger: {e}"))?;
    Ok(LogControl { handle, current: std::sync::Arc::new(std::sync::Mutex::new(args.log_level.clone())) })
}
