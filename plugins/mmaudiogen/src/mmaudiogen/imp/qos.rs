//! Live QoS: a window whose audio can no longer reach the sinks in time is not generated.
//!
//! In a live pipeline the sinks render the sample with running time `t` at `t + latency`
//! (the pipeline latency of the last LATENCY event). A window's output starts at its first
//! sample, so its *deadline* is that sample's running time plus the latency. Before
//! generating a window the generator thread compares
//!
//! ```text
//! now + estimate  ≤  deadline          (running times of the pipeline clock)
//! ```
//!
//! where `estimate` is how long the last generated window took (in clock time). If it
//! holds, the window is generated, with a clock callback at the deadline that cancels it
//! (between two sampler steps) should the load have risen meanwhile; otherwise, or if the
//! callback fired, the window is *skipped*: the assembler gets silence for it (the previous
//! window fades out into it and the next fades in, so the output stays sample-exact and
//! continuous), a QoS message is posted and the `mmaudiogen-window` message says
//! `skipped`. So no audio leaves later than its deadline plus one sampler step, whatever
//! the overload, and backpressure never builds up (a skipped window costs nothing).
//!
//! Recovery: each skipped window lowers the estimate by a quarter, so after an overload a
//! window is tried again (if the load is still there, the deadline cancels it and the
//! estimate goes back up to what that window took); the first window generated on time
//! sets the estimate to its real cost.
//!
//! QoS is off (every window is generated, late or not) unless upstream is live, the element
//! is PLAYING with a clock, and a LATENCY event was received: offline a slow generator only
//! makes the job slower.

use super::*;

/// The QoS policy (plain numbers in nanoseconds, see the module documentation).
#[derive(Debug, Default)]
pub(super) struct Qos {
    /// Expected generation time of the next window, in clock time.
    estimate: Option<u64>,
    /// Windows skipped since READY→PAUSED.
    pub(super) skipped: u64,
    /// Samples of the windows generated and skipped (QoS message statistics).
    processed_samples: u64,
    dropped_samples: u64,
    /// A WARNING was posted for the first skipped window of the stream.
    warned: bool,
}

impl Qos {
    /// Whether to generate a window started at `now` whose deadline is `deadline`, and how
    /// late it is expected to be (negative: early).
    fn decide(&mut self, now: u64, deadline: u64) -> (bool, i64) {
        let estimate = self.estimate.unwrap_or(0);
        let lateness = (now as i128 + estimate as i128 - deadline as i128) as i64;
        if lateness <= 0 {
            return (true, lateness);
        }
        self.estimate = Some(estimate - estimate / 4);
        (false, lateness)
    }

    /// A window was generated in `took`.
    fn generated(&mut self, took: u64) {
        self.estimate = Some(took);
    }

    /// A window was cancelled at its deadline after `took`: it needs at least that.
    fn missed(&mut self, took: u64) {
        self.estimate = Some(self.estimate.unwrap_or(0).max(took));
    }
}

/// The QoS verdict on one window and what is needed to follow it up.
pub(super) struct Gate {
    pub(super) generate: bool,
    /// Expected lateness of the window's audio at the decision (ns, negative: early).
    lateness: i64,
    clock: gst::Clock,
    base_time: gst::ClockTime,
    /// Clock time when the decision was taken.
    started: gst::ClockTime,
    /// Running time by which the window's first sample must reach the sinks.
    deadline: gst::ClockTime,
    running_time: gst::ClockTime,
    stream_time: Option<gst::ClockTime>,
    pts: gst::ClockTime,
    duration: gst::ClockTime,
    samples: u64,
    hop: gst::ClockTime,
}

/// An armed deadline: the clock callback and the number it cancels.
pub(super) struct Deadline {
    id: gst::SingleShotClockId,
    seq: u64,
    gate_started: gst::ClockTime,
    clock: gst::Clock,
}

impl MMAudioGen {
    /// The QoS verdict on a window about to be generated; `None` when QoS is off.
    pub(super) fn qos_gate(&self, span: &WindowSpan, rate: u32) -> Option<Gate> {
        if !lock(&self.shared).upstream_live {
            return None;
        }
        // The sinks render this late. A pipeline configured with less than this element
        // answered (its audio goes to no synchronised sink, e.g. a file) still gets the
        // audio within the answered latency: nothing is skipped before that.
        let latency = (*lock(&self.pipeline_latency))?
            .max(lock(&self.answered_latency).unwrap_or(gst::ClockTime::ZERO));
        let obj = self.obj();
        if obj.current_state() != gst::State::Playing {
            return None;
        }
        let clock = obj.clock()?;
        let base_time = obj.base_time()?;
        let pts = gst::ClockTime::from_nseconds(span.origin + samples_to_ns(span.start, rate));
        let mut output = lock(&self.output);
        let segment = output.segment.as_ref()?;
        let running_time = segment.to_running_time(pts)?;
        let stream_time = segment.to_stream_time(pts);
        let deadline = running_time + latency;
        let started = clock.time();
        let now = started.saturating_sub(base_time);
        let (generate, lateness) = output.qos.decide(now.nseconds(), deadline.nseconds());
        let hop = output
            .assembler
            .as_ref()
            .map(|a| a.config().hop_samples())
            .unwrap_or(span.len);
        gst::log!(
            CAT,
            imp = self,
            "Window {} due at {deadline} (running time), now {now}: {}",
            span.index,
            if generate { "generating" } else { "skipping" }
        );
        Some(Gate {
            generate,
            lateness,
            clock,
            base_time,
            started,
            deadline,
            running_time,
            stream_time,
            pts,
            duration: gst::ClockTime::from_nseconds(samples_to_ns(span.len, rate)),
            samples: span.len,
            hop: gst::ClockTime::from_nseconds(samples_to_ns(hop, rate)),
        })
    }

    /// Cancel the window being generated when its deadline passes.
    pub(super) fn arm_deadline(&self, gate: &Gate) -> Option<Deadline> {
        let seq = {
            let mut shared = lock(&self.shared);
            shared.deadline_seq += 1;
            shared.deadline_hit = false;
            shared.deadline_seq
        };
        let id = gate
            .clock
            .new_single_shot_id(gate.base_time + gate.deadline);
        let weak = self.downgrade();
        id.wait_async(move |_, _, _| {
            if let Some(imp) = weak.upgrade() {
                imp.deadline_passed(seq);
            }
        })
        .ok()?;
        Some(Deadline {
            id,
            seq,
            gate_started: gate.started,
            clock: gate.clock.clone(),
        })
    }

    fn deadline_passed(&self, seq: u64) {
        let mut shared = lock(&self.shared);
        if shared.deadline_seq == seq && shared.generating && !shared.flushing {
            gst::debug!(CAT, imp = self, "Deadline passed: cancelling the window");
            shared.deadline_hit = true;
            self.cancel.cancel();
        }
    }

    /// After the generation: whether the deadline cancelled it (then the cancel is reset,
    /// unless a flush wants it too).
    pub(super) fn disarm_deadline(&self, deadline: Deadline) -> bool {
        deadline.id.unschedule();
        let hit = {
            let mut shared = lock(&self.shared);
            if shared.deadline_seq == deadline.seq {
                shared.deadline_seq += 1;
            }
            let hit = std::mem::take(&mut shared.deadline_hit);
            if hit && !shared.flushing {
                self.cancel.reset();
            }
            hit
        };
        if hit {
            let took = deadline
                .clock
                .time()
                .saturating_sub(deadline.gate_started)
                .nseconds();
            lock(&self.output).qos.missed(took);
        }
        hit
    }

    /// A window was generated under QoS: its cost is the next estimate.
    pub(super) fn qos_generated(&self, gate: &Gate) {
        let took = gate.clock.time().saturating_sub(gate.started).nseconds();
        let mut output = lock(&self.output);
        output.qos.generated(took);
        output.qos.processed_samples += gate.samples;
    }

    /// A window is skipped: QoS message (and a WARNING for the first of the stream).
    pub(super) fn window_skipped(&self, span: &WindowSpan, gate: &Gate) {
        let (estimate, skipped, processed, dropped, first) = {
            let mut output = lock(&self.output);
            let qos = &mut output.qos;
            qos.skipped += 1;
            qos.dropped_samples += gate.samples;
            (
                qos.estimate.unwrap_or(0),
                qos.skipped,
                qos.processed_samples,
                qos.dropped_samples,
                !std::mem::replace(&mut qos.warned, true),
            )
        };
        // Skipped at the decision: the expected lateness; cancelled at the deadline: how
        // late it would have been at least (now, past the deadline, and still running).
        let jitter = if gate.generate {
            let now = gate.clock.time().saturating_sub(gate.base_time);
            (now.nseconds() as i64).saturating_sub(gate.deadline.nseconds() as i64)
        } else {
            gate.lateness
        };
        gst::info!(
            CAT,
            imp = self,
            "Skipping window {} at {} (running time {}): it would be {:.3} s late; {skipped} \
             skipped so far",
            span.index,
            gate.pts,
            gate.running_time,
            jitter as f64 / 1e9
        );
        let proportion = if gate.hop.is_zero() {
            1.0
        } else {
            estimate as f64 / gate.hop.nseconds() as f64
        };
        let msg = gst::message::Qos::builder(true)
            .running_time(gate.running_time)
            .stream_time(gate.stream_time)
            .timestamp(gate.pts)
            .duration(gate.duration)
            .values(jitter, proportion, 0)
            .stats(
                gst::format::Default::from_u64(processed),
                gst::format::Default::from_u64(dropped),
            )
            .src(&*self.obj())
            .build();
        let _ = self.obj().post_message(msg);
        if first {
            gst::element_imp_warning!(
                self,
                gst::CoreError::Clock,
                ("Skipping windows that cannot be on time: the generator is too slow for the latency"),
                [
                    "Window {} would reach the sinks {:.3} s after its time; it is replaced by \
                     silence (QoS messages tell each one). Raise processing-latency, lower \
                     num-steps or use a faster device.",
                    span.index,
                    jitter as f64 / 1e9
                ]
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Qos;

    const S: u64 = 1_000_000_000;

    /// Windows every `hop` ready at `k·hop`, due `budget` later, generation times `cost(k)`;
    /// a window generated past its deadline is cut at the deadline (the clock callback).
    /// Returns per window (generated, lateness of its output in ns).
    fn simulate(n: u64, hop: u64, budget: u64, cost: impl Fn(u64) -> u64) -> Vec<(bool, i64)> {
        let mut qos = Qos::default();
        let mut now = 0u64;
        let mut out = Vec::new();
        for k in 0..n {
            let ready = k * hop;
            let deadline = ready + budget;
            now = now.max(ready);
            if qos.decide(now, deadline).0 {
                let done = now + cost(k);
                if done > deadline {
                    qos.missed(deadline - now);
                    now = deadline;
                    out.push((false, 0));
                } else {
                    qos.generated(cost(k));
                    now = done;
                    out.push((true, done as i64 - deadline as i64));
                }
            } else {
                out.push((false, now as i64 - deadline as i64));
            }
        }
        out
    }

    #[test]
    fn windows_that_fit_are_all_generated_on_time() {
        let run = simulate(50, 7 * S, 2 * S, |_| S);
        assert!(run.iter().all(|&(g, late)| g && late <= 0));
    }

    #[test]
    fn throughput_overload_skips_some_windows_and_never_runs_late() {
        // Generation (1.2 s) slower than the hop (0.8 s) but within the budget (2 s).
        let run = simulate(100, 800_000_000, 2 * S, |_| 1_200_000_000);
        let generated = run.iter().filter(|r| r.0).count();
        assert!((50..=80).contains(&generated), "{generated} generated");
        assert!(run.iter().all(|&(_, late)| late <= 0), "{run:?}");
    }

    #[test]
    fn any_overload_stays_bounded_and_recovers_when_the_load_drops() {
        // 50 ms, then 20 s per window (far beyond the 300 ms budget), then 50 ms again.
        let cost = |k| {
            if (10..40).contains(&k) {
                20 * S
            } else {
                S / 20
            }
        };
        let run = simulate(60, 800_000_000, 300_000_000, cost);
        assert!(run.iter().all(|&(_, late)| late <= 0), "{run:?}");
        assert!(run[..10].iter().all(|r| r.0));
        assert!(run[10..40].iter().all(|r| !r.0));
        // Recovered within two windows of the load dropping.
        assert!(run[42..].iter().all(|r| r.0), "{:?}", &run[40..]);
    }
}
