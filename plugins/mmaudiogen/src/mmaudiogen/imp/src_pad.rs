//! The source pad: LATENCY and CAPS queries, SEEK and LATENCY events, activation (starts
//! and stops the generator thread and the push task).

use super::*;

impl MMAudioGen {
    pub(super) fn src_query(&self, pad: &gst::Pad, query: &mut gst::QueryRef) -> bool {
        gst::log!(CAT, obj = pad, "Handling query {query:?}");
        match query.view_mut() {
            gst::QueryViewMut::Latency(q) => {
                let mut upstream = gst::query::Latency::new();
                if !self.sinkpad.peer_query(&mut upstream) {
                    return false;
                }
                let (live, min, max) = upstream.result();
                let (own_min, own_max) = self.own_latency();
                lock(&self.shared).upstream_live = live;
                *lock(&self.reported_latency) = Some(own_min);
                *lock(&self.answered_latency) = Some(min + own_min);
                gst::debug!(
                    CAT,
                    imp = self,
                    "Latency: upstream {min}/{max:?}, own {own_min}/{own_max}, live {live}"
                );
                q.set(live, min + own_min, max.map(|m| m + own_max));
                true
            }
            gst::QueryViewMut::Caps(q) => {
                let caps = match lock(&self.output).rate {
                    Some(rate) => gst_audio::AudioCapsBuilder::new_interleaved()
                        .format(gst_audio::AUDIO_FORMAT_F32)
                        .rate(rate as i32)
                        .channels(1)
                        .build(),
                    None => pad.pad_template_caps(),
                };
                let caps = match q.filter() {
                    Some(filter) => {
                        filter.intersect_with_mode(&caps, gst::CapsIntersectMode::First)
                    }
                    None => caps,
                };
                q.set_result(&caps);
                true
            }
            _ => gst::Pad::query_default(pad, Some(&*self.obj()), query),
        }
    }

    pub(super) fn src_event(&self, pad: &gst::Pad, event: gst::Event) -> bool {
        gst::log!(CAT, obj = pad, "Handling event {event:?}");
        match event.view() {
            gst::EventView::Seek(s) if s.get().0 < 0.0 => {
                self.refuse_reverse_playback(s.get().0);
                false
            }
            gst::EventView::Latency(l) => {
                gst::debug!(CAT, imp = self, "Pipeline latency {}", l.latency());
                *lock(&self.pipeline_latency) = Some(l.latency());
                gst::Pad::event_default(pad, Some(&*self.obj()), event)
            }
            _ => gst::Pad::event_default(pad, Some(&*self.obj()), event),
        }
    }

    /// The model generates audio from the video forwards; a reverse segment would need
    /// the whole segment before its first (last) sample. Refused, with a WARNING.
    pub(super) fn refuse_reverse_playback(&self, rate: f64) {
        gst::element_imp_warning!(
            self,
            gst::StreamError::NotImplemented,
            ("mmaudiogen does not support reverse playback (rate {rate})"),
            [
                "The soundtrack is generated from the video in forward windows; play                  forwards (rate > 0). The audio of a reverse segment is left empty (GAP)."
            ]
        );
    }

    /// (min, max) latency this element adds.
    pub(super) fn own_latency(&self) -> (gst::ClockTime, gst::ClockTime) {
        let settings = lock(&self.settings).clone();
        let frame = lock(&self.state)
            .frame_duration
            .unwrap_or(gst::ClockTime::ZERO);
        // Before the model is loaded, the variant says the rate and MMAudio's latent period.
        let (rate, period) = match &lock(&self.shared).model {
            Model::Ready { traits, .. } => (traits.rate, traits.period),
            _ => {
                // `auto` before the folder is read: the default variant's rate (44.1 kHz);
                // the latency is posted again once the model is known.
                let rate = settings
                    .variant
                    .requested()
                    .unwrap_or(mmaudio::Variant::Large44kV2)
                    .mode()
                    .sampling_rate();
                (rate, mmaudio::generator::default_latent_period(rate))
            }
        };
        let ns = |samples: u64| gst::ClockTime::from_nseconds(samples_to_ns(samples, rate));
        let (wait, hop) = match settings.engine(rate, period) {
            Ok(EngineConfig::Continuation(c)) => (ns(c.latency_samples()), ns(c.hop_samples())),
            Ok(EngineConfig::Windows(_)) | Err(_) => (settings.window(), settings.hop()),
        };
        let min = wait + frame + settings.processing_latency();
        let max = min + hop * settings.max_in_flight as u64;
        (min, max)
    }

    pub(super) fn post_latency_if_changed(&self) {
        let (own_min, _) = self.own_latency();
        let reported = *lock(&self.reported_latency);
        if reported.is_some_and(|r| r != own_min) {
            gst::debug!(CAT, imp = self, "Latency changed to {own_min}");
            let _ = self
                .obj()
                .post_message(gst::message::Latency::builder().src(&*self.obj()).build());
        }
    }

    pub(super) fn src_activatemode(
        &self,
        mode: gst::PadMode,
        active: bool,
    ) -> Result<(), gst::LoggableError> {
        if mode != gst::PadMode::Push {
            return Err(gst::loggable_error!(CAT, "Only push mode is supported"));
        }
        if active {
            self.unset_flushing();
            self.start_generator().map_err(|err| {
                gst::loggable_error!(CAT, "Failed to start the generator thread: {err}")
            })?;
            self.start_task()
                .map_err(|err| gst::loggable_error!(CAT, "Failed to start task: {err}"))
        } else {
            self.set_flushing();
            let res = self
                .srcpad
                .stop_task()
                .map_err(|err| gst::loggable_error!(CAT, "Failed to stop task: {err}"));
            self.stop_generator();
            res
        }
    }
}
