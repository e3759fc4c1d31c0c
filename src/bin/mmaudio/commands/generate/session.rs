//! Running one file's pipeline to its end: the bus loop (progress, errors, the trim seek)
//! and what SIGINT/SIGTERM do.
//!
//! First signal, single-file run: the element is told `stop-after-window`; the window being
//! generated is finished, the input is cut where its audio ends (see `pipeline.rs`), and
//! the file is completed normally, so it is valid and its soundtrack and video end
//! together. First signal in a batch run, or before any window was being generated, and
//! any second signal: the pipeline is stopped at once and nothing is written under the
//! output's name (the `.partial` file is removed by the caller).

use super::pipeline::{self, Built, Trim};
use super::progress::{self, Progress};
use super::signals;
use anyhow::{Result, bail};
use gst::prelude::*;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Ending {
    /// EOS after the whole input.
    Complete,
    /// EOS after `stop-after-window`: the audio ends at this pts (ns).
    Stopped { end_ns: u64 },
    /// Stopped at once by a signal; the file is incomplete.
    Aborted,
}

#[derive(Debug, Clone)]
pub struct RunStats {
    pub ending: Ending,
    pub windows: u64,
    /// Seconds from start to the model's load-complete message (when it loaded here).
    pub load_s: Option<f64>,
    /// Text of the load-complete message.
    pub load_text: Option<String>,
    /// The element's `mmaudiogen-model` message: `MMAudio small_16k, 16000 Hz, on cpu in f32`.
    pub model: Option<String>,
    pub wall_s: f64,
}

pub struct RunOptions {
    /// First signal: stop after the current window and keep the file (single-file run)
    /// rather than abort.
    pub finish_on_signal: bool,
    pub trim: Option<Trim>,
    /// Window geometry, for the expected number of windows.
    pub window_ms: u32,
    pub overlap_ms: u32,
    /// Duration of the video to process, when known beforehand (sets the window total).
    pub duration: Option<gst::ClockTime>,
}

/// Number of windows of a stream of `duration_ns` (the window engine's geometry: window
/// `k` covers `[k·H, k·H + W)`, the last one is the first reaching the end).
pub fn window_count(duration_ns: u64, window_ms: u32, overlap_ms: u32) -> u64 {
    let w = window_ms as u64 * 1_000_000;
    let h = (window_ms.saturating_sub(overlap_ms) as u64).max(1) * 1_000_000;
    if duration_ns <= w {
        1
    } else {
        1 + (duration_ns - w).div_ceil(h)
    }
}

/// Run `built` to its end. Errors are the pipeline's (the caller stops it).
pub fn run(
    built: &Built,
    generator: &gst::Element,
    opts: &RunOptions,
    progress: &mut Progress,
) -> Result<RunStats> {
    let pipeline = &built.pipeline;
    let control = &built.control;
    let bus = pipeline.bus().unwrap();
    let started = Instant::now();
    let mut stats = RunStats {
        ending: Ending::Complete,
        windows: 0,
        load_s: None,
        load_text: None,
        model: None,
        wall_s: 0.0,
    };
    if pipeline.set_state(gst::State::Playing).is_err() {
        // The reason is on the bus.
        while let Some(msg) = bus.pop() {
            if let gst::MessageView::Error(e) = msg.view() {
                bail!("{}", pipeline::error_text(e));
            }
        }
        bail!("the pipeline failed to start");
    }
    let mut stop_requested = false;
    let mut duration_known = opts.duration.is_some();
    if let Some(d) = opts.duration {
        progress.set_total(window_count(d.nseconds(), opts.window_ms, opts.overlap_ms));
    }
    loop {
        let n = signals::count();
        if n >= 2 || (n == 1 && !opts.finish_on_signal) {
            stats.ending = Ending::Aborted;
            break;
        }
        if n == 1 && !stop_requested {
            stop_requested = true;
            let sig = signals::name(signals::first().unwrap_or(libc::SIGINT));
            let end = generator.emit_by_name::<u64>("stop-after-window", &[]);
            if end == u64::MAX {
                progress.say(&format!(
                    "{sig}: no window was being generated yet, stopping without output"
                ));
                stats.ending = Ending::Aborted;
                break;
            }
            control.clip_at.fetch_min(end, Ordering::SeqCst);
            let origin = control.first_pts.load(Ordering::SeqCst);
            let origin = if origin == u64::MAX { 0 } else { origin };
            // The window that ends there (the one being generated, or the last one done).
            let (w, h) = (
                opts.window_ms as u64 * 1_000_000,
                (opts.window_ms.saturating_sub(opts.overlap_ms) as u64).max(1) * 1_000_000,
            );
            let last = 1 + end.saturating_sub(origin).saturating_sub(w).div_ceil(h);
            progress.say(&format!(
                "{sig}: closing the file after window {last}, at {:.2} s (again to abort \
                 without output)",
                end.saturating_sub(origin) as f64 / 1e9
            ));
            stats.ending = Ending::Stopped { end_ns: end };
        }
        if let Some(trim) = &opts.trim
            && control.held.load(Ordering::SeqCst)
            && !control.seek_sent.load(Ordering::SeqCst)
        {
            pipeline::send_trim_seek(control, trim)?;
        }
        if !duration_known
            && let Some(d) = generator
                .static_pad("sink")
                .and_then(|p| p.peer_query_duration::<gst::ClockTime>())
        {
            duration_known = true;
            let d = match opts.trim {
                Some(Trim {
                    start,
                    stop: Some(stop),
                    ..
                }) => stop.min(d).saturating_sub(start),
                Some(Trim { start, .. }) => d.saturating_sub(start),
                None => d,
            };
            progress.set_total(window_count(d.nseconds(), opts.window_ms, opts.overlap_ms));
        }
        let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(100)) else {
            continue;
        };
        match msg.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => bail!("{}", pipeline::error_text(e)),
            gst::MessageView::Warning(w) => {
                progress.say(&format!("warning: {}", w.error()));
            }
            gst::MessageView::Progress(p) => {
                let (kind, code, text) = p.get();
                if code == "load" {
                    match kind {
                        gst::ProgressType::Start => progress.say(text),
                        gst::ProgressType::Complete => {
                            stats.load_s = Some(started.elapsed().as_secs_f64());
                            stats.load_text = Some(text.to_string());
                            progress.say(text);
                            progress.set_message("generating");
                        }
                        _ => {}
                    }
                }
            }
            gst::MessageView::Element(e) => {
                if let Some(s) = e.structure() {
                    if s.name() == "mmaudiogen-window"
                        && let Some(w) = progress::window_info(s)
                    {
                        stats.windows = stats.windows.max(w.index + 1);
                        progress.window(&w);
                    } else if s.name() == "mmaudiogen-progress"
                        && let Some(st) = progress::stage_info(s)
                    {
                        progress.stage(&st);
                    } else if s.name() == "mmaudiogen-model" {
                        stats.model = model_info(s);
                    }
                }
            }
            _ => {}
        }
    }
    // A second signal that came while the stream was closing still means "abort".
    if signals::count() >= 2 {
        stats.ending = Ending::Aborted;
    }
    stats.wall_s = started.elapsed().as_secs_f64();
    Ok(stats)
}

/// The `mmaudiogen-model` message as one phrase: `MMAudio small_16k, 16000 Hz, on cpu in f32`.
fn model_info(s: &gst::StructureRef) -> Option<String> {
    let name = s.get::<String>("name").ok()?;
    let rate = s.get::<u32>("rate").ok()?;
    let mut text = format!("{name}, {rate} Hz");
    if let Ok(d) = s.get::<String>("device")
        && !d.is_empty()
    {
        text += &format!(", on {d}");
    }
    if let Ok(p) = s.get::<String>("precision")
        && !p.is_empty()
    {
        text += &format!(" in {p}");
    }
    Some(text)
}

/// Stop a file's pipeline and take the generator out of it, kept in READY (its model stays
/// loaded for the next file).
pub fn teardown(pipeline: &gst::Pipeline, generator: &gst::Element) {
    let _ = pipeline.set_state(gst::State::Ready);
    let _ = pipeline.remove(generator);
    let _ = pipeline.set_state(gst::State::Null);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_counts_follow_the_engine() {
        let s = 1_000_000_000u64;
        assert_eq!(window_count(3 * s, 8000, 1000), 1);
        assert_eq!(window_count(8 * s, 8000, 1000), 1);
        assert_eq!(window_count(10 * s, 8000, 1000), 2);
        assert_eq!(window_count(15 * s, 8000, 1000), 2);
        assert_eq!(window_count(15 * s + 1, 8000, 1000), 3);
        // windows start every 7 s; the one at 56 s is the first to reach 60 s
        assert_eq!(window_count(60 * s, 8000, 1000), 9);
    }
}
