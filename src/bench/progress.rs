//! The progress line on stderr: rewritten in place on a terminal, one line per step otherwise.
use std::io::{IsTerminal, Write};
use std::time::Instant;

pub struct Progress {
    tty: bool,
    quiet: bool,
    start: Instant,
    last_step: String,
}

impl Progress {
    pub fn new(quiet: bool) -> Self {
        Progress {
            tty: std::io::stderr().is_terminal(),
            quiet,
            start: Instant::now(),
            last_step: String::new(),
        }
    }

    /// `step` names what runs (printed once per change when not on a terminal), `detail`
    /// what part of it (only shown on a terminal).
    pub fn show(&mut self, step: &str, detail: &str) {
        if self.quiet {
            return;
        }
        let secs = self.start.elapsed().as_secs();
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(
                err,
                "\r\x1b[K[{:>2}:{:02}] {step} {detail}",
                secs / 60,
                secs % 60
            );
            let _ = err.flush();
        } else if step != self.last_step {
            let _ = writeln!(err, "[{:>2}:{:02}] {step}", secs / 60, secs % 60);
        }
        self.last_step = step.to_string();
    }

    /// Clears the line (call before printing results).
    pub fn finish(&mut self) {
        if self.tty && !self.quiet {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[K");
            let _ = err.flush();
        }
    }
}
