//! Progress: a bar on a terminal, lines otherwise. Both move within a window — the
//! element's `mmaudiogen-progress` messages say which stage (features, sampler step k of
//! n, decoding) the window being generated is in — so a CPU user does not stare at
//! `0/5 windows` for minutes.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::time::{Duration, Instant};

/// Bar units per window (the bar moves in hundredths of a window).
const UNITS: u64 = 100;

/// The fields of a `mmaudiogen-window` message.
#[derive(Debug, Clone)]
pub struct WindowInfo {
    pub index: u64,
    pub start_s: f64,
    pub duration_s: f64,
    pub frames: u32,
    pub processing_s: f64,
    pub last: bool,
}

/// The fields of a `mmaudiogen-progress` message.
#[derive(Debug, Clone, PartialEq)]
pub struct StageInfo {
    pub index: u64,
    /// `features`, `sampling` or `decoding`.
    pub stage: String,
    pub step: u32,
    pub steps: u32,
}

impl StageInfo {
    /// Fraction of the window's work done at this stage (the sampler dominates: features
    /// take the first 5 %, the sampler up to 90 %, decoding the rest).
    pub fn fraction(&self) -> f64 {
        match self.stage.as_str() {
            "features" => 0.0,
            "sampling" if self.steps > 0 => 0.05 + 0.85 * self.step as f64 / self.steps as f64,
            "sampling" => 0.05,
            _ => 0.92,
        }
    }

    pub fn describe(&self) -> String {
        match self.stage.as_str() {
            "sampling" => format!("sampling step {}/{}", self.step, self.steps),
            "features" => "video and text features".into(),
            "decoding" => "decoding".into(),
            other => other.to_string(),
        }
    }
}

pub fn window_info(s: &gst::StructureRef) -> Option<WindowInfo> {
    let secs = |f: &str| {
        s.get::<gst::ClockTime>(f)
            .map(|t| t.nseconds() as f64 / 1e9)
            .ok()
    };
    Some(WindowInfo {
        index: s.get("index").ok()?,
        start_s: secs("start")?,
        duration_s: secs("duration")?,
        frames: s.get("frames").unwrap_or(0),
        processing_s: secs("processing-time")?,
        last: s.get("last").unwrap_or(false),
    })
}

pub fn stage_info(s: &gst::StructureRef) -> Option<StageInfo> {
    Some(StageInfo {
        index: s.get("index").ok()?,
        stage: s.get::<String>("stage").ok()?,
        step: s.get("step").unwrap_or(0),
        steps: s.get("steps").unwrap_or(0),
    })
}

pub struct Progress {
    bar: Option<ProgressBar>,
    /// Prefix of every line (`[3/12] ` in a batch run).
    prefix: String,
    total: Option<u64>,
    done: u64,
    /// Pts of the first window (times are shown from the start of the video).
    origin: Option<f64>,
    /// Without a bar: at most one stage line per this interval (zero: every stage).
    log_interval: Duration,
    last_line: Instant,
    window_started: Instant,
}

impl Progress {
    pub fn new(show_bar: bool, log_interval: Duration, prefix: String) -> Self {
        let bar = show_bar.then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} {prefix}[{bar:30}] {msg}, {elapsed} (ETA {eta})",
                )
                .unwrap()
                .progress_chars("=> "),
            );
            bar.set_prefix(prefix.clone());
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Self {
            bar,
            prefix,
            total: None,
            done: 0,
            origin: None,
            log_interval,
            last_line: Instant::now(),
            window_started: Instant::now(),
        }
    }

    pub fn say(&self, line: &str) {
        match &self.bar {
            Some(b) => b.println(format!("{}{line}", self.prefix)),
            None => eprintln!("{}{line}", self.prefix),
        }
    }

    pub fn set_message(&self, msg: &str) {
        if let Some(b) = &self.bar {
            b.set_message(msg.to_string());
        }
    }

    fn total_text(&self) -> String {
        self.total
            .map(|t| t.to_string())
            .unwrap_or_else(|| "?".into())
    }

    pub fn set_total(&mut self, total: u64) {
        let total = total.max(self.done);
        self.total = Some(total);
        if let Some(b) = &self.bar {
            b.set_length(total * UNITS);
        }
    }

    /// The window being generated moved to another stage.
    pub fn stage(&mut self, s: &StageInfo) {
        if s.index < self.done {
            return;
        }
        let what = format!(
            "window {}/{}: {}",
            s.index + 1,
            self.total_text(),
            s.describe()
        );
        match &self.bar {
            Some(b) => {
                b.set_position(self.done * UNITS + (s.fraction() * UNITS as f64) as u64);
                b.set_message(what);
            }
            None => {
                if self.last_line.elapsed() >= self.log_interval {
                    self.last_line = Instant::now();
                    eprintln!(
                        "{}{what} ({:.1} s into the window)",
                        self.prefix,
                        self.window_started.elapsed().as_secs_f64()
                    );
                }
            }
        }
    }

    /// A window is generated.
    pub fn window(&mut self, w: &WindowInfo) {
        self.done = w.index + 1;
        self.window_started = Instant::now();
        if w.last || self.total.is_some_and(|t| t < self.done) {
            self.set_total(self.done);
        }
        let origin = *self.origin.get_or_insert(w.start_s);
        let start = w.start_s - origin;
        let line = format!(
            "window {}/{}: {:.2}–{:.2} s ({} frames) generated in {:.2} s",
            w.index + 1,
            self.total_text(),
            start,
            start + w.duration_s,
            w.frames,
            w.processing_s
        );
        match &self.bar {
            Some(b) => {
                b.set_position(self.done * UNITS);
                b.set_message(format!("window {}/{} done", self.done, self.total_text()));
            }
            None => {
                self.last_line = Instant::now();
                eprintln!("{}{line}", self.prefix);
            }
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_move_the_fraction_within_a_window() {
        let st = |stage: &str, step, steps| StageInfo {
            index: 0,
            stage: stage.into(),
            step,
            steps,
        };
        let f = [
            st("features", 0, 25),
            st("sampling", 1, 25),
            st("sampling", 13, 25),
            st("sampling", 25, 25),
            st("decoding", 0, 25),
        ]
        .map(|s| s.fraction());
        assert!(f.windows(2).all(|w| w[0] < w[1]), "{f:?}");
        assert!(f[0] >= 0.0 && f[4] < 1.0);
        assert_eq!(st("sampling", 12, 25).describe(), "sampling step 12/25");
    }
}
