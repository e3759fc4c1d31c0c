//! The GStreamer pipeline of one file.
//!
//! ```text
//! filesrc ! parsebin                     (every stream passes the clip probe, see below)
//!   video (first stream):
//!     .wav/.flac:  queue ! decodebin ! videoconvert ! mmaudiogen ! GEN
//!     container:   tee name=t
//!                    t. ! queue (unbounded) ! mux.video_0              (copied, not re-encoded)
//!                    t. ! queue ! decodebin ! videoconvert ! mmaudiogen ! GEN
//!   audio (first stream), --original-audio:
//!     drop:   fakesink
//!     mix:    queue (unbounded) ! decodebin ! audioconvert ! audioresample ! F32,R,C ! mixer.sink_1
//!     track:  queue (unbounded) ! [decodebin ! ENC, unless the muxer takes it as it is] ! mux.audio_0
//!   other streams: fakesink
//! GEN = audioconvert ! audioresample ! F32,R,C ! volume (mix gain) ! audiomixer name=mixer   (mix)
//!       or nothing (drop, track)
//! then: audioconvert ! audioresample ! audio/x-raw,rate=R,channels=C ! wavenc|flacenc|avenc_aac|opusenc
//!       ! [queue ! mux.audio_N ! mux ! ] filesink (the `.partial` file)
//! text-only (no input, --duration S):
//!   videotestsrc (black, exactly S long) ! mmaudiogen text-only=true ! ... ! filesink
//! ```
//!
//! The `mmaudiogen` element is made once per run and moved from file to file (kept in
//! READY in between), so the model is loaded once for all files of a variant.
//!
//! Probes: every stream of the input passes a *clip* probe right after `parsebin`: once
//! `stop-after-window` has said where the audio ends (Ctrl-C, SIGTERM), later buffers
//! (by decode time) are dropped and EOS is returned upstream, so the copied video, the
//! original audio and the new soundtrack all end there. With `--start`/`--duration` the
//! same pads are held (blocked) until the main thread has sent a seek to the demuxer, so
//! nothing before the start is decoded or written (the flush of that seek is kept from
//! downstream: nothing passed yet). The generated soundtrack's end (running time) is
//! recorded so the mix and the AAC encoder's last frame are clipped to it exactly.

use super::output::Output;
use anyhow::{Context, Result, anyhow, bail};
use gst::prelude::*;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// What happens to the input's own audio (`--original-audio`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OriginalAudio {
    /// Left out: the output has the new soundtrack only.
    Drop,
    /// Mixed with the new soundtrack (at `--mix-gain-db`) into one track.
    Mix,
    /// Kept as the first audio track, the new soundtrack is the second (containers only).
    Track,
}

impl OriginalAudio {
    pub fn name(self) -> &'static str {
        match self {
            OriginalAudio::Drop => "drop",
            OriginalAudio::Mix => "mix",
            OriginalAudio::Track => "track",
        }
    }
}

/// What `parsebin` finds in an input file (a quick look before the real run).
#[derive(Debug, Clone, Default)]
pub struct InputInfo {
    pub duration: Option<gst::ClockTime>,
    pub video: Option<gst::Caps>,
    /// The first audio stream.
    pub audio: Option<gst::Caps>,
}

impl InputInfo {
    /// Rate and channels of the first audio stream, when its caps say.
    pub fn audio_format(&self) -> (Option<u32>, Option<u32>) {
        let s = self.audio.as_ref().and_then(|c| c.structure(0));
        (
            s.and_then(|s| s.get::<i32>("rate").ok()).map(|r| r as u32),
            s.and_then(|s| s.get::<i32>("channels").ok())
                .map(|c| c as u32),
        )
    }
}

pub fn path_str(p: &Path) -> Result<&str> {
    p.to_str()
        .ok_or_else(|| anyhow!("path {} is not valid UTF-8", p.display()))
}

pub fn make(factory: &str) -> Result<gst::Element> {
    gst::ElementFactory::make(factory)
        .build()
        .with_context(|| format!("cannot create the GStreamer element {factory}"))
}

fn unbounded_queue() -> Result<gst::Element> {
    Ok(gst::ElementFactory::make("queue")
        .property("max-size-time", 0u64)
        .property("max-size-bytes", 0u32)
        .property("max-size-buffers", 0u32)
        .build()?)
}

/// An error on the bus from a streaming-thread callback (so the bus loop reports it).
fn post_error(pipeline: &gst::Pipeline, error: gst::StreamError, text: &str) {
    let _ = pipeline.post_message(
        gst::message::Error::builder(error, text)
            .src(pipeline)
            .build(),
    );
}

/// Link `pad` to a fakesink (streams we do not use: without a sink they would stop the
/// demuxer with not-linked).
fn discard(pipeline: &gst::Pipeline, pad: &gst::Pad) {
    let Ok(sink) = gst::ElementFactory::make("fakesink")
        .property("sync", false)
        .property("async", false)
        .build()
    else {
        return;
    };
    if pipeline.add(&sink).is_ok() {
        let _ = sink.sync_state_with_parent();
        let _ = pad.link(&sink.static_pad("sink").unwrap());
    }
}

pub fn pad_caps_name(pad: &gst::Pad) -> (Option<gst::Caps>, String) {
    let caps = pad.current_caps().or_else(|| Some(pad.query_caps(None)));
    let name = caps
        .as_ref()
        .and_then(|c| c.structure(0).map(|s| s.name().to_string()))
        .unwrap_or_default();
    (caps, name)
}

/// Look at an input: its streams (after `parsebin`) and duration.
pub fn probe_input(path: &Path) -> Result<InputInfo> {
    let pipeline = gst::Pipeline::new();
    let src = gst::ElementFactory::make("filesrc")
        .property("location", path_str(path)?)
        .build()?;
    let parsebin = make("parsebin")?;
    pipeline.add_many([&src, &parsebin])?;
    src.link(&parsebin)?;
    let info = Arc::new(Mutex::new(InputInfo::default()));
    let i = info.clone();
    let weak = pipeline.downgrade();
    let posted = Arc::new(AtomicBool::new(false));
    parsebin.connect_pad_added(move |_, pad| {
        let Some(pipeline) = weak.upgrade() else {
            return;
        };
        let (caps, name) = pad_caps_name(pad);
        {
            let mut i = i.lock().unwrap();
            if name.starts_with("video/") && i.video.is_none() {
                i.video = caps;
            } else if name.starts_with("audio/") && i.audio.is_none() {
                i.audio = caps;
            }
        }
        // parsebin exposes all of its pads at once, before any data flows (it has no
        // no-more-pads signal): the first buffer (or EOS) on any of them means all are there.
        let weak = pipeline.downgrade();
        let posted = posted.clone();
        pad.add_probe(
            gst::PadProbeType::BUFFER | gst::PadProbeType::EVENT_DOWNSTREAM,
            move |_, info| {
                let data = info.buffer().is_some()
                    || info
                        .event()
                        .is_some_and(|e| e.type_() == gst::EventType::Eos);
                if !data {
                    return gst::PadProbeReturn::Ok;
                }
                if !posted.swap(true, Ordering::SeqCst)
                    && let Some(p) = weak.upgrade()
                {
                    let _ = p.post_message(
                        gst::message::Application::builder(gst::Structure::new_empty("all-pads"))
                            .build(),
                    );
                }
                gst::PadProbeReturn::Remove
            },
        );
        discard(&pipeline, pad);
    });
    let bus = pipeline.bus().unwrap();
    let res = (|| -> Result<()> {
        if pipeline.set_state(gst::State::Paused).is_err() {
            bail!(
                "{}",
                first_error(&bus).unwrap_or_else(|| "cannot open".into())
            );
        }
        loop {
            let Some(msg) = bus.timed_pop(gst::ClockTime::from_seconds(60)) else {
                bail!("no answer from the demuxer within 60 s");
            };
            match msg.view() {
                gst::MessageView::Application(_) => return Ok(()),
                gst::MessageView::Error(e) => bail!("{}", error_text(e)),
                _ => {}
            }
        }
    })();
    let duration = pipeline.query_duration::<gst::ClockTime>();
    let _ = pipeline.set_state(gst::State::Null);
    res.with_context(|| format!("cannot read {}", path.display()))?;
    let mut info = info.lock().unwrap().clone();
    info.duration = duration;
    Ok(info)
}

fn first_error(bus: &gst::Bus) -> Option<String> {
    while let Some(msg) = bus.pop() {
        if let gst::MessageView::Error(e) = msg.view() {
            return Some(error_text(e));
        }
    }
    None
}

pub fn error_text(e: &gst::message::Error) -> String {
    let src = e
        .src()
        .map(|s| s.name().to_string())
        .unwrap_or_else(|| "pipeline".into());
    match e.debug() {
        Some(d) if !d.is_empty() => format!("{} ({src}: {d})", e.error()),
        _ => format!("{} ({src})", e.error()),
    }
}

pub fn aac_encoder() -> Result<&'static str> {
    for e in ["avenc_aac", "fdkaacenc", "voaacenc"] {
        if gst::ElementFactory::find(e).is_some() {
            return Ok(e);
        }
    }
    bail!(
        "no AAC encoder for the .mp4/.mov soundtrack: install gstreamer1.0-libav (avenc_aac), \
         or write .mkv (FLAC)"
    )
}

/// The encoders of an output's soundtrack.
pub fn encoder_for(kind: &Output) -> Result<&'static str> {
    Ok(match kind {
        Output::Audio { encoder } => encoder,
        Output::Mux { audio: "aac", .. } => aac_encoder()?,
        Output::Mux { audio: "flac", .. } => "flacenc",
        Output::Mux { .. } => "opusenc",
    })
}

/// The element factories a run needs (checked before anything starts).
pub fn needed_elements(
    kind: &Output,
    text_only: bool,
    original: OriginalAudio,
) -> Vec<&'static str> {
    let mut needed = vec!["audioconvert", "audioresample", "capsfilter", "filesink"];
    if text_only {
        needed.push("videotestsrc");
    } else {
        needed.extend(["filesrc", "parsebin", "queue", "decodebin", "videoconvert"]);
    }
    match kind {
        Output::Audio { encoder } => needed.push(encoder),
        Output::Mux { muxer, audio } => {
            needed.extend([*muxer, "tee"]);
            match *audio {
                "opus" => needed.push("opusenc"),
                "flac" => needed.push("flacenc"),
                _ => {}
            }
        }
    }
    if original == OriginalAudio::Mix {
        needed.extend(["audiomixer", "volume"]);
    }
    needed
}

/// How the written soundtrack is encoded.
#[derive(Debug, Clone, Copy, Default)]
pub struct AudioFormat {
    pub rate: Option<u32>,
    pub channels: Option<u32>,
    /// kbit/s for lossy codecs.
    pub bitrate_kbps: Option<u32>,
}

/// A time span of the input to use (`--start`, `--duration`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Trim {
    pub start: gst::ClockTime,
    pub stop: Option<gst::ClockTime>,
    /// Seek to a key frame at or before `start` (the video is copied, so it must start
    /// on one) instead of decoding from exactly `start`.
    pub key_unit: bool,
}

/// One file's pipeline settings.
pub struct Plan<'a> {
    /// `None`: text-only for `text_only_s` seconds.
    pub input: Option<&'a Path>,
    pub info: InputInfo,
    pub text_only_s: Option<f64>,
    /// The file the pipeline writes (the `.partial` name).
    pub write_to: &'a Path,
    pub kind: Output,
    /// Effective mode (`Drop` when the input has no audio).
    pub original: OriginalAudio,
    pub mix_gain_db: f64,
    pub format: AudioFormat,
    pub trim: Option<Trim>,
}

/// State shared by the probes and the bus loop.
#[derive(Debug)]
pub struct Control {
    /// Pts where the input is cut (`stop-after-window`); `u64::MAX`: not cut.
    pub clip_at: AtomicU64,
    /// Generated samples (mono, model rate) and that rate.
    pub samples: AtomicU64,
    pub rate: AtomicU64,
    /// Running time of the end of the generated audio so far.
    pub generated_end: AtomicU64,
    /// Pts of the first frame given to the generator (`u64::MAX`: none yet).
    pub first_pts: AtomicU64,
    /// Trim: a parsebin pad is held (so all are there: parsebin exposes them together,
    /// before data flows), the seek was sent.
    pub held: AtomicBool,
    pub seek_sent: AtomicBool,
    /// The pad the trim seek is sent on.
    pub seek_pad: Mutex<Option<gst::Pad>>,
}

impl Default for Control {
    fn default() -> Self {
        Self {
            clip_at: AtomicU64::new(u64::MAX),
            samples: AtomicU64::new(0),
            rate: AtomicU64::new(0),
            generated_end: AtomicU64::new(0),
            first_pts: AtomicU64::new(u64::MAX),
            held: AtomicBool::new(false),
            seek_sent: AtomicBool::new(false),
            seek_pad: Mutex::new(None),
        }
    }
}

pub struct Built {
    pub pipeline: gst::Pipeline,
    pub control: Arc<Control>,
}

/// Running time of `t` in the segment sticky on `pad` (`t` itself without a segment).
fn running_time(pad: &gst::Pad, t: gst::ClockTime) -> u64 {
    pad.sticky_event::<gst::event::Segment>(0)
        .and_then(|e| {
            e.segment()
                .downcast_ref::<gst::ClockTime>()
                .and_then(|s| s.to_running_time(t))
        })
        .unwrap_or(t)
        .nseconds()
}

/// `capsfilter` for raw audio with the given rate/channels (F32 when `f32`).
fn raw_audio_filter(rate: Option<u32>, channels: Option<u32>, f32: bool) -> Result<gst::Element> {
    let mut caps = gst::Caps::builder("audio/x-raw");
    if f32 {
        caps = caps.field("format", "F32LE").field("layout", "interleaved");
    }
    if let Some(r) = rate {
        caps = caps.field("rate", r as i32);
    }
    if let Some(c) = channels {
        caps = caps.field("channels", c as i32);
    }
    Ok(gst::ElementFactory::make("capsfilter")
        .property("caps", caps.build())
        .build()?)
}

/// Add and link `elements` in order; returns (first, last).
fn chain(
    pipeline: &gst::Pipeline,
    elements: Vec<gst::Element>,
) -> Result<(gst::Element, gst::Element)> {
    pipeline.add_many(&elements)?;
    gst::Element::link_many(&elements)?;
    Ok((elements[0].clone(), elements[elements.len() - 1].clone()))
}

/// `audioconvert ! audioresample ! F32,R,C ! audioconvert ! encoder`; returns (first,
/// encoder). With `clip`, the raw audio before the encoder is cut at the generated end, so
/// resampling cannot add a sample to the written soundtrack.
fn encode_chain(
    pipeline: &gst::Pipeline,
    kind: &Output,
    format: &AudioFormat,
    clip: Option<&Arc<Control>>,
) -> Result<(gst::Element, gst::Element)> {
    let enc_name = encoder_for(kind)?;
    let encoder = make(enc_name)?;
    if let Some(kbps) = format.bitrate_kbps {
        if encoder.find_property("bitrate").is_none() {
            bail!("{enc_name} has no bitrate setting");
        }
        encoder.set_property_from_str("bitrate", &(kbps as u64 * 1000).to_string());
    }
    let raw = raw_audio_filter(format.rate, format.channels, true)?;
    if let Some(control) = clip {
        clip_raw_to_generated(&raw.static_pad("src").unwrap(), control);
    }
    chain(
        pipeline,
        vec![
            make("audioconvert")?,
            make("audioresample")?,
            raw,
            make("audioconvert")?,
            encoder,
        ],
    )
}

/// Count the generated samples and record the generated end (running time) at `pad`
/// (the sink pad right after the generator).
fn watch_generated(pad: &gst::Pad, control: &Arc<Control>) {
    let c = control.clone();
    pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
        if let Some(b) = info.buffer() {
            c.samples.fetch_add(b.size() as u64 / 4, Ordering::Relaxed);
            if c.rate.load(Ordering::Relaxed) == 0
                && let Some(rate) = pad
                    .current_caps()
                    .and_then(|c| c.structure(0).and_then(|s| s.get::<i32>("rate").ok()))
            {
                c.rate.store(rate as u64, Ordering::Relaxed);
            }
            if let (Some(pts), Some(d)) = (b.pts(), b.duration()) {
                c.generated_end
                    .fetch_max(running_time(pad, pts + d), Ordering::SeqCst);
            }
        }
        gst::PadProbeReturn::Ok
    });
}

/// Codecs that work in whole frames (AAC: 1024 samples) pad the last frame: without care
/// the soundtrack in the file would be up to a frame longer than the video. The muxer
/// takes each sample's duration from the buffer, and the demuxer clips the decoded audio
/// to the track's duration, so shortening the last encoded buffer's duration to the end
/// of the generated audio makes the file's soundtrack exactly as long as the video; a
/// buffer wholly after that end (a mix whose original audio runs longer) is dropped.
/// (FLAC is exact by itself. Opus in .webm: Matroska carries the codec's padding, but
/// Opus needs 48 kHz, and GStreamer's resampler may end one 48 kHz sample short of a
/// 44.1 kHz soundtrack.)
fn clip_encoded_to_generated(encoder: &gst::Element, control: &Arc<Control>) {
    let c = control.clone();
    encoder
        .static_pad("src")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
            let end = c.generated_end.load(Ordering::SeqCst);
            if end == 0 {
                return gst::PadProbeReturn::Ok;
            }
            if let Some(b) = info.buffer_mut()
                && let (Some(pts), Some(d)) = (b.pts(), b.duration())
            {
                let (start, stop) = (running_time(pad, pts), running_time(pad, pts + d));
                if start >= end {
                    return gst::PadProbeReturn::Drop;
                }
                if stop > end {
                    // In whole samples, rounded down to the nanosecond: muxers round a
                    // duration up to their time scale (the rate), one sample too many
                    // when the pts was itself rounded down.
                    let rate = pad
                        .current_caps()
                        .and_then(|c| c.structure(0).and_then(|s| s.get::<i32>("rate").ok()))
                        .filter(|r| *r > 0)
                        .map(|r| r as u64);
                    let ns = match rate {
                        Some(rate) => {
                            let n = ((end - start) as u128 * rate as u128 + 500_000_000)
                                / 1_000_000_000;
                            (n * 1_000_000_000 / rate as u128) as u64
                        }
                        None => end - start,
                    };
                    b.make_mut().set_duration(gst::ClockTime::from_nseconds(ns));
                }
            }
            gst::PadProbeReturn::Ok
        });
}

/// Raw F32 interleaved audio made to end exactly where the generated audio ends (running
/// time): later buffers are dropped, the one across the end is shortened, and at EOS a few
/// samples of silence make up for a resampler that ended short (16 → 48 kHz can lose 2).
/// So a mix whose original runs longer, or a resampled soundtrack, is as long as the video.
fn clip_raw_to_generated(pad: &gst::Pad, control: &Arc<Control>) {
    struct Seen {
        /// Running time of the first sample, frames passed, the pts after the last one.
        first: Option<u64>,
        frames: u64,
        next_pts: Option<gst::ClockTime>,
    }
    let seen = Mutex::new(Seen {
        first: None,
        frames: 0,
        next_pts: None,
    });
    let c = control.clone();
    pad.add_probe(
        gst::PadProbeType::BUFFER | gst::PadProbeType::EVENT_DOWNSTREAM,
        move |pad, info| {
            let end = c.generated_end.load(Ordering::SeqCst);
            let format = pad.current_caps().and_then(|caps| {
                let s = caps.structure(0)?;
                Some((
                    s.get::<i32>("rate").ok()? as u64,
                    s.get::<i32>("channels").ok()? as usize,
                ))
            });
            let (Some((rate, channels)), true) = (format, end > 0) else {
                return gst::PadProbeReturn::Ok;
            };
            let frame = 4 * channels;
            // rounded: buffer times are whole nanoseconds, sample times are not
            let frames_in =
                |ns: u64| ((ns as u128 * rate as u128 + 500_000_000) / 1_000_000_000) as u64;
            if let Some(e) = info.event() {
                if e.type_() != gst::EventType::Eos {
                    return gst::PadProbeReturn::Ok;
                }
                let (missing, pts) = {
                    let s = seen.lock().unwrap();
                    let Some(first) = s.first else {
                        return gst::PadProbeReturn::Ok;
                    };
                    (
                        frames_in(end.saturating_sub(first)).saturating_sub(s.frames),
                        s.next_pts,
                    )
                };
                // at most 10 ms: more would be a real gap, not resampler rounding
                if missing > 0
                    && missing <= rate / 100
                    && let Some(pts) = pts
                    && let Some(peer) = pad.peer()
                    && let Ok(mut silence) = gst::Buffer::with_size(missing as usize * frame)
                {
                    {
                        let b = silence.get_mut().unwrap();
                        if let Ok(mut map) = b.map_writable() {
                            map.fill(0);
                        }
                        b.set_pts(pts);
                        b.set_duration(gst::ClockTime::from_nseconds(
                            missing * 1_000_000_000 / rate,
                        ));
                    }
                    // The EOS is already sticky on this pad: hand the silence to the peer.
                    let _ = peer.chain(silence);
                }
                return gst::PadProbeReturn::Ok;
            }
            let Some(b) = info.buffer_mut() else {
                return gst::PadProbeReturn::Ok;
            };
            let Some(pts) = b.pts() else {
                return gst::PadProbeReturn::Ok;
            };
            let start = running_time(pad, pts);
            if start >= end {
                return gst::PadProbeReturn::Drop;
            }
            let keep = frames_in(end - start) as usize;
            if keep * frame < b.size() {
                let b = b.make_mut();
                b.set_size(keep * frame);
                b.set_duration(gst::ClockTime::from_nseconds(end - start));
            }
            let mut s = seen.lock().unwrap();
            s.first.get_or_insert(start);
            s.frames += (b.size() / frame) as u64;
            s.next_pts = Some(pts + b.duration().unwrap_or(gst::ClockTime::ZERO));
            gst::PadProbeReturn::Ok
        },
    );
}

/// Drop buffers at or after the time where `stop-after-window` said the audio ends (by
/// decode time: every frame shown before that time is kept whole, and nothing decoded
/// later is). `eos`: answer EOS upstream (on the demuxer's pads, so it stops reading);
/// else accept and drop (after queues that read ahead: the EOS event still comes through).
fn add_clip_probe(pad: &gst::Pad, control: &Arc<Control>, eos: bool) {
    let c = control.clone();
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        let at = c.clip_at.load(Ordering::SeqCst);
        if at != u64::MAX
            && let Some(b) = info.buffer()
            && let Some(t) = b.dts().or(b.pts())
            && t.nseconds() >= at
        {
            if eos {
                info.flow_res = Err(gst::FlowError::Eos);
            }
            return gst::PadProbeReturn::Drop;
        }
        gst::PadProbeReturn::Ok
    });
}

/// The probes on each stream leaving `parsebin`: the clip and, with a trim, the hold until
/// the seek is sent.
fn add_input_probes(pad: &gst::Pad, control: &Arc<Control>, trim: bool, pipeline: &gst::Pipeline) {
    add_clip_probe(pad, control, true);
    if !trim {
        return;
    }
    let c = control.clone();
    let weak = pipeline.downgrade();
    pad.add_probe(
        gst::PadProbeType::BLOCK | gst::PadProbeType::BUFFER,
        move |_, _| {
            if c.seek_sent.load(Ordering::SeqCst) {
                return gst::PadProbeReturn::Remove;
            }
            if !c.held.swap(true, Ordering::SeqCst)
                && let Some(p) = weak.upgrade()
            {
                // Wake the bus loop, which sends the seek.
                let _ = p.post_message(
                    gst::message::Application::builder(gst::Structure::new_empty("mmaudio-held"))
                        .build(),
                );
            }
            gst::PadProbeReturn::Ok
        },
    );
    // The seek's flush must not reach the muxer or the generator: nothing passed yet.
    let c = control.clone();
    pad.add_probe(
        gst::PadProbeType::EVENT_DOWNSTREAM | gst::PadProbeType::EVENT_FLUSH,
        move |_, info| {
            let flush = info.event().is_some_and(|e| {
                matches!(
                    e.type_(),
                    gst::EventType::FlushStart | gst::EventType::FlushStop
                )
            });
            if flush && c.seek_sent.load(Ordering::SeqCst) {
                gst::PadProbeReturn::Drop
            } else {
                gst::PadProbeReturn::Ok
            }
        },
    );
}

/// Send the trim seek (from the bus loop, once a stream is held and all are there).
pub fn send_trim_seek(control: &Control, trim: &Trim) -> Result<()> {
    let Some(pad) = control.seek_pad.lock().unwrap().clone() else {
        bail!("no stream to seek in");
    };
    control.seek_sent.store(true, Ordering::SeqCst);
    let mut flags = gst::SeekFlags::FLUSH;
    flags |= if trim.key_unit {
        gst::SeekFlags::KEY_UNIT | gst::SeekFlags::SNAP_BEFORE
    } else {
        gst::SeekFlags::ACCURATE
    };
    let (stop_type, stop) = match trim.stop {
        Some(s) => (gst::SeekType::Set, Some(s)),
        None => (gst::SeekType::None, None),
    };
    let seek = gst::event::Seek::new(1.0, flags, gst::SeekType::Set, trim.start, stop_type, stop);
    if !pad.send_event(seek) {
        bail!(
            "the input cannot seek to {:.3} s (--start/--duration need a seekable file)",
            trim.start.nseconds() as f64 / 1e9
        );
    }
    Ok(())
}

/// Build the pipeline of one file around `generator` (already configured).
pub fn build(plan: &Plan, generator: &gst::Element) -> Result<Built> {
    let pipeline = gst::Pipeline::new();
    let control = Arc::new(Control::default());
    if let Some(Trim {
        stop: Some(stop), ..
    }) = plan.trim
    {
        // Nothing decoded from the stop on reaches the copied video either (the demuxer
        // may pass the frame at the stop itself).
        control.clip_at.store(stop.nseconds(), Ordering::SeqCst);
    }
    pipeline.add(generator)?;
    let sink = gst::ElementFactory::make("filesink")
        .property("location", path_str(plan.write_to)?)
        .build()?;
    pipeline.add(&sink)?;

    // The generated soundtrack: gen ! [mix] ! encode ! [mux] ! filesink.
    let after_gen = make("audioconvert")?;
    pipeline.add(&after_gen)?;
    generator.link(&after_gen)?;
    watch_generated(&after_gen.static_pad("sink").unwrap(), &control);
    let mix = plan.original == OriginalAudio::Mix;
    let (mix_rate, mix_channels) = {
        let (r, c) = plan.info.audio_format();
        (
            plan.format.rate.or(r).unwrap_or(48_000),
            plan.format
                .channels
                .or(c.map(|c| c.clamp(1, 2)))
                .unwrap_or(2),
        )
    };
    let (enc_first, encoder) = encode_chain(&pipeline, &plan.kind, &plan.format, Some(&control))?;
    // mix: after_gen ! audioresample ! F32,R,C ! volume ! mixer.sink_0, the original on
    // mixer.sink_1, mixer ! F32,R,C (cut at the generated end) ! encode
    let mut mix_original_sink: Option<gst::Pad> = None;
    if mix {
        let resample = make("audioresample")?;
        let volume = gst::ElementFactory::make("volume")
            .property("volume", 10f64.powf(plan.mix_gain_db / 20.0))
            .build()?;
        chain(
            &pipeline,
            vec![
                resample.clone(),
                raw_audio_filter(Some(mix_rate), Some(mix_channels), true)?,
                volume.clone(),
            ],
        )?;
        after_gen.link(&resample)?;
        let mixer = make("audiomixer")?;
        let mixed = raw_audio_filter(Some(mix_rate), Some(mix_channels), true)?;
        pipeline.add_many([&mixer, &mixed])?;
        let gen_pad = mixer
            .request_pad_simple("sink_%u")
            .ok_or_else(|| anyhow!("audiomixer has no sink pad"))?;
        volume.static_pad("src").unwrap().link(&gen_pad)?;
        mix_original_sink = Some(
            mixer
                .request_pad_simple("sink_%u")
                .ok_or_else(|| anyhow!("audiomixer has no sink pad"))?,
        );
        mixer.link(&mixed)?;
        clip_raw_to_generated(&mixed.static_pad("src").unwrap(), &control);
        mixed.link(&enc_first)?;
    } else {
        after_gen.link(&enc_first)?;
    }
    clip_encoded_to_generated(&encoder, &control);

    match (plan.input, &plan.kind) {
        (None, kind) => {
            let Output::Audio { .. } = kind else {
                bail!(
                    "text-only generation writes audio only: give an output ending in .wav or .flac"
                )
            };
            let secs = plan
                .text_only_s
                .ok_or_else(|| anyhow!("give an input video, or --duration for text-only"))?;
            let (frames, rate) = text_only_timing((secs * 1000.0).round() as u64);
            let src = gst::ElementFactory::make("videotestsrc")
                .property("num-buffers", frames as i32)
                .property_from_str("pattern", "black")
                .build()?;
            let caps = gst::ElementFactory::make("capsfilter")
                .property(
                    "caps",
                    gst::Caps::builder("video/x-raw")
                        .field("format", "RGB")
                        .field("width", 64i32)
                        .field("height", 64i32)
                        .field("framerate", rate)
                        .build(),
                )
                .build()?;
            pipeline.add_many([&src, &caps])?;
            gst::Element::link_many([&src, &caps, generator])?;
            encoder.link(&sink)?;
        }
        (Some(input), kind) => {
            let src = gst::ElementFactory::make("filesrc")
                .property("location", path_str(input)?)
                .build()?;
            let parsebin = make("parsebin")?;
            pipeline.add_many([&src, &parsebin])?;
            src.link(&parsebin)?;

            // The decoding branch: queue ! decodebin ! videoconvert ! generator.
            let decode_queue = make("queue")?;
            let convert = make("videoconvert")?;
            let c = control.clone();
            convert.static_pad("src").unwrap().add_probe(
                gst::PadProbeType::BUFFER,
                move |_, info| {
                    if let Some(pts) = info.buffer().and_then(|b| b.pts()) {
                        let _ = c.first_pts.compare_exchange(
                            u64::MAX,
                            pts.nseconds(),
                            Ordering::SeqCst,
                            Ordering::SeqCst,
                        );
                    }
                    gst::PadProbeReturn::Ok
                },
            );
            let decodebin = decoder_to(&pipeline, &convert, &input.display().to_string())?;
            pipeline.add_many([&decode_queue, &decodebin, &convert])?;
            decode_queue.link(&decodebin)?;
            convert.link(generator)?;

            // Where the video stream goes, and the audio targets of a container.
            let (video_target, mux) = match kind {
                Output::Audio { .. } => {
                    encoder.link(&sink)?;
                    (decode_queue.static_pad("sink").unwrap(), None)
                }
                Output::Mux { muxer, .. } => {
                    let tee = make("tee")?;
                    let copy_queue = unbounded_queue()?;
                    let mux = make(muxer)?;
                    pipeline.add_many([&tee, &copy_queue, &mux])?;
                    tee.link(&copy_queue)?;
                    tee.link(&decode_queue)?;
                    let video_pad = mux
                        .request_pad_simple("video_%u")
                        .ok_or_else(|| anyhow!("{muxer} has no video pad"))?;
                    let copy_out = copy_queue.static_pad("src").unwrap();
                    add_clip_probe(&copy_out, &control, false);
                    copy_out.link(&video_pad)?;
                    mux.link(&sink)?;
                    (tee.static_pad("sink").unwrap(), Some(mux))
                }
            };
            // Audio pads of the muxer: the original first (track), then the soundtrack.
            let mut original_into_mux: Option<gst::Pad> = None;
            if let Some(mux) = &mux {
                if plan.original == OriginalAudio::Track {
                    original_into_mux = Some(
                        mux.request_pad_simple("audio_%u")
                            .ok_or_else(|| anyhow!("the muxer has no audio pad"))?,
                    );
                }
                let audio_queue = make("queue")?;
                pipeline.add(&audio_queue)?;
                encoder.link(&audio_queue)?;
                let audio_pad = mux
                    .request_pad_simple("audio_%u")
                    .ok_or_else(|| anyhow!("the muxer has no audio pad"))?;
                audio_queue.static_pad("src").unwrap().link(&audio_pad)?;
            }
            let original_target = match (&original_into_mux, &mix_original_sink) {
                (Some(mux_pad), _) => {
                    Some(original_track_chain(&pipeline, &control, plan, mux_pad)?)
                }
                (None, Some(mixer_pad)) => Some(original_mix_chain(
                    &pipeline,
                    &control,
                    mixer_pad,
                    mix_rate,
                    mix_channels,
                )?),
                (None, None) => None,
            };
            let video_template_caps = mux
                .as_ref()
                .and_then(|m| m.pad_template("video_%u"))
                .map(|t| t.caps().clone());
            let ext = plan
                .write_to
                .file_name()
                .map(|n| n.to_string_lossy().replace(".partial", ""))
                .and_then(|n| n.rsplit('.').next().map(str::to_string))
                .unwrap_or_default();
            connect_streams(
                &pipeline,
                &parsebin,
                &control,
                plan.trim.is_some(),
                video_target,
                video_template_caps,
                original_target,
                ext,
            );
        }
    }
    Ok(Built { pipeline, control })
}

/// `queue ! decodebin ! audioconvert ! audioresample ! F32,R,C ! mixer_pad`; returns the
/// queue's sink pad.
fn original_mix_chain(
    pipeline: &gst::Pipeline,
    control: &Arc<Control>,
    mixer_pad: &gst::Pad,
    rate: u32,
    channels: u32,
) -> Result<gst::Pad> {
    let queue = unbounded_queue()?;
    let decodebin = make("decodebin")?;
    pipeline.add_many([&queue, &decodebin])?;
    queue.link(&decodebin)?;
    add_clip_probe(&queue.static_pad("src").unwrap(), control, false);
    let (first, last) = chain(
        pipeline,
        vec![
            make("audioconvert")?,
            make("audioresample")?,
            raw_audio_filter(Some(rate), Some(channels), true)?,
        ],
    )?;
    last.static_pad("src").unwrap().link(mixer_pad)?;
    link_decoded(pipeline, &decodebin, first, "audio/");
    Ok(queue.static_pad("sink").unwrap())
}

/// `queue ! mux_pad` when the muxer takes the original audio as it is, else
/// `queue ! decodebin ! <the container's encoder> ! mux_pad`; returns the queue's sink pad.
fn original_track_chain(
    pipeline: &gst::Pipeline,
    control: &Arc<Control>,
    plan: &Plan,
    mux_pad: &gst::Pad,
) -> Result<gst::Pad> {
    let queue = unbounded_queue()?;
    pipeline.add(&queue)?;
    add_clip_probe(&queue.static_pad("src").unwrap(), control, false);
    let takes_as_is = match (&plan.info.audio, mux_pad.pad_template()) {
        (Some(caps), Some(t)) => caps.can_intersect(t.caps()),
        _ => false,
    };
    if takes_as_is {
        queue.static_pad("src").unwrap().link(mux_pad)?;
    } else {
        let decodebin = make("decodebin")?;
        pipeline.add(&decodebin)?;
        queue.link(&decodebin)?;
        let (first, encoder) = encode_chain(pipeline, &plan.kind, &AudioFormat::default(), None)?;
        encoder.static_pad("src").unwrap().link(mux_pad)?;
        link_decoded(pipeline, &decodebin, first, "audio/");
    }
    Ok(queue.static_pad("sink").unwrap())
}

/// Link `decodebin`'s first pad of media `prefix` to `target`; discard the others.
fn link_decoded(
    pipeline: &gst::Pipeline,
    decodebin: &gst::Element,
    target: gst::Element,
    prefix: &'static str,
) {
    let weak = pipeline.downgrade();
    let linked = AtomicBool::new(false);
    decodebin.connect_pad_added(move |_, pad| {
        let Some(pipeline) = weak.upgrade() else {
            return;
        };
        let (_, name) = pad_caps_name(pad);
        if name.starts_with(prefix) && !linked.swap(true, Ordering::SeqCst) {
            if let Err(e) = pad.link(&target.static_pad("sink").unwrap()) {
                post_error(
                    &pipeline,
                    gst::StreamError::Format,
                    &format!("cannot link the decoded {name}: {e:?}"),
                );
            }
        } else {
            discard(&pipeline, pad);
        }
    });
}

/// `decodebin` whose first raw video pad is linked to `target` (other pads are
/// discarded); posts an error if the stream has no video.
fn decoder_to(pipeline: &gst::Pipeline, target: &gst::Element, what: &str) -> Result<gst::Element> {
    let decodebin = make("decodebin")?;
    let linked = Arc::new(AtomicBool::new(false));
    let weak = pipeline.downgrade();
    let target_pad = target.static_pad("sink").unwrap();
    let l = linked.clone();
    decodebin.connect_pad_added(move |_, pad| {
        let Some(pipeline) = weak.upgrade() else {
            return;
        };
        let (_, name) = pad_caps_name(pad);
        if name.starts_with("video/") && !l.load(Ordering::SeqCst) {
            match pad.link(&target_pad) {
                Ok(_) => l.store(true, Ordering::SeqCst),
                Err(e) => post_error(
                    &pipeline,
                    gst::StreamError::Format,
                    &format!("cannot link the decoded video ({name}): {e:?}"),
                ),
            }
        } else {
            discard(&pipeline, pad);
        }
    });
    let weak = pipeline.downgrade();
    let what = what.to_string();
    decodebin.connect_no_more_pads(move |_| {
        if !linked.load(Ordering::SeqCst)
            && let Some(pipeline) = weak.upgrade()
        {
            post_error(
                &pipeline,
                gst::StreamError::WrongType,
                &format!("{what} has no video stream that can be decoded"),
            );
        }
    });
    Ok(decodebin)
}

/// Route `parsebin`'s streams: the first video to `video_target`, the first audio to
/// `audio_target` (if any), the rest to fakesinks; every stream gets the input probes.
/// (A file without video was refused by [`probe_input`].)
#[allow(clippy::too_many_arguments)]
fn connect_streams(
    pipeline: &gst::Pipeline,
    parsebin: &gst::Element,
    control: &Arc<Control>,
    trim: bool,
    video_target: gst::Pad,
    video_template_caps: Option<gst::Caps>,
    audio_target: Option<gst::Pad>,
    ext: String,
) {
    let state = Mutex::new((false, false));
    let weak = pipeline.downgrade();
    let c = control.clone();
    parsebin.connect_pad_added(move |_, pad| {
        let Some(pipeline) = weak.upgrade() else {
            return;
        };
        add_input_probes(pad, &c, trim, &pipeline);
        let (caps, name) = pad_caps_name(pad);
        let mut s = state.lock().unwrap();
        if name.starts_with("video/") && !s.0 {
            if let (Some(caps), Some(template)) = (&caps, &video_template_caps)
                && !caps.can_intersect(template)
            {
                post_error(
                    &pipeline,
                    gst::StreamError::Format,
                    &format!(
                        "the input's video ({name}) cannot be copied into a .{ext} file (the \
                         video is not re-encoded): choose .mkv, which takes most codecs, or \
                         .wav for the soundtrack alone"
                    ),
                );
                discard(&pipeline, pad);
                return;
            }
            match pad.link(&video_target) {
                Ok(_) => {
                    s.0 = true;
                    *c.seek_pad.lock().unwrap() = Some(pad.clone());
                }
                Err(e) => post_error(
                    &pipeline,
                    gst::StreamError::Format,
                    &format!("cannot link the input's video ({name}): {e:?}"),
                ),
            }
        } else if name.starts_with("audio/") && !s.1 && audio_target.is_some() {
            s.1 = true;
            if let Err(e) = pad.link(audio_target.as_ref().unwrap()) {
                post_error(
                    &pipeline,
                    gst::StreamError::Format,
                    &format!("cannot link the input's audio ({name}): {e:?}"),
                );
            }
        } else {
            discard(&pipeline, pad);
        }
    });
}

/// Frames and frame rate of a black video lasting exactly `duration_ms`: about 25 fps,
/// with a rate of `frames · 1000 / duration_ms` so that the last frame ends on the
/// millisecond.
pub fn text_only_timing(duration_ms: u64) -> (u64, gst::Fraction) {
    let frames = duration_ms.div_ceil(40).max(1);
    let (mut num, mut den) = (frames * 1000, duration_ms.max(1));
    let g = gcd(num, den);
    num /= g;
    den /= g;
    (frames, gst::Fraction::new(num as i32, den as i32))
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_only_video_lasts_exactly_the_duration() {
        for ms in [1u64, 39, 40, 1001, 3000, 4004, 12_345] {
            let (frames, rate) = text_only_timing(ms);
            let (n, d) = (rate.numer() as u64, rate.denom() as u64);
            // videotestsrc: pts(k) = k · d · 1e9 / n
            let end_ns = frames * d * 1_000_000_000 / n;
            assert_eq!(end_ns, ms * 1_000_000, "{ms} ms");
            if ms >= 40 {
                assert!(frames * 1000 / ms <= 25, "{ms}: {frames} frames");
            }
        }
    }
}
