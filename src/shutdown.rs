//! SIGINT/SIGTERM → a [`CancellationToken`]; a second signal exits at once.
//! Only `main` calls this: the library takes the token as a parameter.

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

/// Cancels the returned token at the first SIGINT or SIGTERM; exits the process
/// with status 130 at the second.
pub fn on_signals() -> std::io::Result<CancellationToken> {
    let token = CancellationToken::new();
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let cancel = token.clone();
    tokio::spawn(async move {
        let first = tokio::select! { _ = term.recv() => "SIGTERM", _ = int.recv() => "SIGINT" };
        tracing::info!(signal = first, "stopping gracefully; send again to exit at once");
        cancel.cancel();
        let second = tokio::select! { _ = term.recv() => "SIGTERM", _ = int.recv() => "SIGINT" };
        tracing::warn!(signal = second, "second signal: exiting now");
        std::process::exit(130);
    });
    Ok(token)
}
