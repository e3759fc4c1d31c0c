//! Control from the application: the `stop-after-window` action signal (end the stream
//! after the window being generated), and the `mmaudiogen-progress` messages posted while
//! a window is generated.

use super::*;
use mmaudio::request::Stage;

/// The element's signals.
pub(super) fn signals() -> Vec<glib::subclass::Signal> {
    vec![
        glib::subclass::Signal::builder("stop-after-window")
            .action()
            .return_type::<u64>()
            .class_handler(|args| {
                let element = args[0]
                    .get::<super::super::MMAudioGen>()
                    .expect("signal emitted on mmaudiogen");
                let end = element.imp().stop_after_window();
                Some(end.map_or(u64::MAX, |t| t.nseconds()).to_value())
            })
            .build(),
    ]
}

impl MMAudioGen {
    /// End the stream after the window being generated (see the module documentation,
    /// "Stopping early"). Returns the pts where the audio will end, `None` if no window
    /// has been generated or is being generated.
    pub(super) fn stop_after_window(&self) -> Option<gst::ClockTime> {
        let rate = lock(&self.output).rate;
        let mut shared = lock(&self.shared);
        if shared.flushing {
            return None;
        }
        // Where the audio will end: after the window being generated, else after the last
        // one generated (its tail is held for a crossfade). Read before the generator thread can act
        // on the Finish job (lock order: shared, then output).
        let span = shared.current.or_else(|| lock(&self.output).held);
        let end = match (span, rate) {
            (Some(span), Some(rate)) => {
                Some(span.origin + samples_to_ns(span.start + span.len, rate))
            }
            _ => None,
        };
        let first = !std::mem::replace(&mut shared.finished, true);
        // Windows not started yet are dropped, with any End planned after them (the Finish
        // job outputs what the last generated window left); events keep their order.
        let mut dropped = 0usize;
        let mut has_eos = false;
        shared.jobs.retain(|job| match job {
            Job::Window { .. } => {
                dropped += 1;
                false
            }
            Job::End { .. } | Job::Finish => false,
            Job::Preroll(_) => true,
            Job::Event(e) => {
                has_eos |= e.type_() == gst::EventType::Eos;
                true
            }
        });
        shared.windows = shared.windows.saturating_sub(dropped);
        shared.jobs.push_front(Job::Finish);
        if first && !has_eos {
            shared.jobs.push_back(Job::Event(gst::event::Eos::new()));
        }
        self.cond.notify_all();
        drop(shared);
        gst::info!(
            CAT,
            imp = self,
            "stop-after-window: {dropped} queued window(s) dropped, audio ends at {:?}",
            end
        );
        end.map(gst::ClockTime::from_nseconds)
    }

    /// The held tail of the last window generated, then nothing (see [`Job::Finish`]).
    pub(super) fn finish_stream(&self) -> Result<gst::FlowSuccess, gst::FlowError> {
        let res = {
            let mut output = lock(&self.output);
            match (output.held.take(), output.assembler.as_mut()) {
                (Some(span), Some(a)) => a.finish(span.start + span.len).map(Some),
                _ => Ok(None),
            }
        };
        match res {
            Ok(Some(chunk)) => {
                self.emit(Out::Chunk(chunk, ChunkKind::End))?;
                Ok(gst::FlowSuccess::Ok)
            }
            Ok(None) => Ok(gst::FlowSuccess::Ok),
            Err(err) => {
                gst::element_imp_error!(
                    self,
                    gst::StreamError::Failed,
                    ["Window bookkeeping failed when stopping early: {err}"]
                );
                Err(gst::FlowError::Error)
            }
        }
    }

    /// A [`Cancel`] sharing the element's flag that posts `mmaudiogen-progress` messages
    /// for window `index`.
    pub(super) fn progress_cancel(&self, index: u64, steps: usize) -> Cancel {
        let weak = self.obj().downgrade();
        self.cancel.with_observer(Arc::new(move |stage: Stage| {
            let Some(element) = weak.upgrade() else {
                return;
            };
            let (name, step) = match stage {
                Stage::Features => ("features", 0),
                Stage::Sampling { step, .. } => ("sampling", step as u32),
                Stage::Decoding => ("decoding", 0),
            };
            let structure = gst::Structure::builder("mmaudiogen-progress")
                .field("index", index)
                .field("stage", name)
                .field("step", step)
                .field("steps", steps as u32)
                .build();
            let _ = element.post_message(
                gst::message::Element::builder(structure)
                    .src(&element)
                    .build(),
            );
        }))
    }
}
