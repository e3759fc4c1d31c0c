//! The source pad task: pushes what the generator thread produced (events, audio, the
//! preroll GAP), in stream order. It is the only thread that pushes on the source pad, so
//! a synchronised sink may block it as long as it likes without delaying generation.

use super::*;

/// What the generator thread hands to the source pad task.
pub(super) enum Out {
    Event(gst::Event),
    Chunk(Chunk, ChunkKind),
    /// A stream's first frame arrived at this pts. Downstream gets the caps and a GAP of
    /// duration zero at that time, so that a sink can preroll (and a pipeline start)
    /// before the first window is generated, which takes a window of video. The GAP claims
    /// no time: the audio for that pts follows.
    Preroll(gst::ClockTime),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ChunkKind {
    /// A generated window's audio (it counts towards `max-in-flight` until pushed).
    Window,
    /// The rest of a stream at its end; the next stream starts with DISCONT.
    End,
}

impl MMAudioGen {
    pub(super) fn start_task(&self) -> Result<(), glib::BoolError> {
        let weak = self.downgrade();
        self.srcpad.start_task(move || {
            if let Some(imp) = weak.upgrade() {
                imp.push_loop();
            }
        })
    }

    fn push_loop(&self) {
        let item = {
            let mut shared = lock(&self.shared);
            loop {
                if shared.flushing {
                    drop(shared);
                    let _ = self.srcpad.pause_task();
                    return;
                }
                if let Some(item) = shared.out.pop_front() {
                    break item;
                }
                shared = self
                    .cond
                    .wait(shared)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        };
        let window = matches!(item, Out::Chunk(_, ChunkKind::Window));
        let res = self.push_out(item);
        let mut shared = lock(&self.shared);
        if window {
            shared.windows = shared.windows.saturating_sub(1);
        }
        self.cond.notify_all();
        if let Err(err) = res {
            gst::debug!(CAT, imp = self, "Pausing task: {err:?}");
            if !shared.flushing {
                shared.flow = Err(err);
            }
            drop(shared);
            let _ = self.srcpad.pause_task();
        }
    }

    fn push_out(&self, item: Out) -> Result<gst::FlowSuccess, gst::FlowError> {
        match item {
            Out::Event(event) => {
                if event.type_() != gst::EventType::StreamStart {
                    self.ensure_caps()?;
                }
                let eos = event.type_() == gst::EventType::Eos;
                if !self.srcpad.push_event(event) {
                    gst::debug!(CAT, imp = self, "Downstream refused an event");
                }
                if eos {
                    let mut shared = lock(&self.shared);
                    if !shared.flushing {
                        shared.flow = Err(gst::FlowError::Eos);
                    }
                }
                Ok(gst::FlowSuccess::Ok)
            }
            Out::Preroll(pts) => {
                self.ensure_caps()?;
                gst::debug!(CAT, imp = self, "Stream starts at {pts}: preroll GAP");
                let gap = gst::event::Gap::builder(pts)
                    .duration(gst::ClockTime::ZERO)
                    .build();
                if !self.srcpad.push_event(gap) {
                    gst::debug!(CAT, imp = self, "Downstream refused the preroll GAP");
                }
                Ok(gst::FlowSuccess::Ok)
            }
            Out::Chunk(chunk, kind) => {
                let rate = self.ensure_caps()?;
                // A fatal flow return is posted as an ERROR there (`downstream_flow`).
                let res = self.push_chunk(chunk, rate);
                if kind == ChunkKind::End {
                    lock(&self.output).discont = true;
                }
                res
            }
        }
    }
}
