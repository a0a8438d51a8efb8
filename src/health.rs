//! Readiness: what `/readyz` answers. The worker reports into it; the HTTP
//! server reads it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// The process's readiness, as `/readyz` answers it: ready once started, while
/// the lease table (or another subject, see [`Health::with_subject`]) has
/// answered within the window, nothing blocks it and it is not shutting down.
/// Shared in an `Arc`: the worker or producer reports into it, the HTTP server
/// reads [`Health::readiness`].
#[derive(Debug)]
pub struct Health {
    started: AtomicBool,
    shutting_down: AtomicBool,
    /// When the lease table last answered (a scan, a renewal).
    store_ok_at: Mutex<Option<Instant>>,
    /// How stale that may be before the worker is not ready.
    window: Duration,
    /// What answers: the lease table (worker), Kinesis (producer).
    subject: &'static str,
    /// Set while something else keeps the process from being ready (the
    /// producer's source is reconnecting).
    blocker: Mutex<Option<String>>,
}

impl Health {
    /// Not ready until [`Health::started`] is called; afterwards not ready once the
    /// subject (by default the lease table) has not answered for longer than
    /// `window`.
    pub fn new(window: Duration) -> Self {
        Self {
            started: false.into(),
            shutting_down: false.into(),
            store_ok_at: Mutex::new(None),
            window,
            subject: "the lease table",
            blocker: Mutex::new(None),
        }
    }

    /// Names what must answer in the not-ready reasons.
    pub fn with_subject(mut self, subject: &'static str) -> Self {
        self.subject = subject;
        self
    }

    /// Not ready for `why` until cleared with `None`.
    pub fn set_blocker(&self, why: Option<String>) {
        *self.blocker.lock().unwrap() = why;
    }

    /// Start-up checks passed: the stream and tables exist and answer.
    pub fn started(&self) {
        self.started.store(true, Ordering::Relaxed);
        self.store_ok();
    }

    /// The process is stopping: not ready from now on, whatever else holds.
    pub fn shutting_down(&self) {
        self.shutting_down.store(true, Ordering::Relaxed);
    }

    /// The lease table (or the subject) answered just now.
    pub fn store_ok(&self) {
        *self.store_ok_at.lock().unwrap() = Some(Instant::now());
    }

    /// `Ok` when ready; otherwise why not.
    pub fn readiness(&self) -> Result<(), String> {
        if self.shutting_down.load(Ordering::Relaxed) {
            return Err("shutting down".into());
        }
        if !self.started.load(Ordering::Relaxed) {
            return Err("starting: checking the stream and tables".into());
        }
        if let Some(why) = self.blocker.lock().unwrap().clone() {
            return Err(why);
        }
        match *self.store_ok_at.lock().unwrap() {
            Some(at) if at.elapsed() <= self.window => Ok(()),
            Some(at) => Err(format!("{} has not answered for {:.1} s", self.subject, at.elapsed().as_secs_f64())),
            None => Err(format!("{} has not answered yet", self.subject)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn ready_only_while_started_the_store_answers_and_not_shutting_down() {
        let h = Health::new(Duration::from_secs(3));
        assert!(h.readiness().unwrap_err().starts_with("starting"));
        h.started();
        assert_eq!(h.readiness(), Ok(()));
        tokio::time::advance(Duration::from_millis(3_100)).await;
        assert!(h.readiness().unwrap_err().contains("has not answered for 3.1 s"));
        h.store_ok();
        assert_eq!(h.readiness(), Ok(()));
        h.set_blocker(Some("reconnecting".into()));
        assert_eq!(h.readiness(), Err("reconnecting".into()));
        h.set_blocker(None);
        assert_eq!(h.readiness(), Ok(()));
        h.shutting_down();
        assert_eq!(h.readiness(), Err("shutting down".into()));
    }
}
