//! `mmaudio spectrogram`: a picture of a generated window — thumbnails of the video frames
//! above the log-mel spectrogram of the soundtrack, on one time axis (PNG).
//!
//! ```text
//! mmaudio generate in.mp4 -o out.mp4        # video + generated soundtrack
//! mmaudio spectrogram out.mp4 -o docs/spectrogram.png --start 0 --duration 8
//! ```
//!
//! The input is decoded with GStreamer (`decodebin`): its first video stream gives the
//! frames (one thumbnail per `--frame-interval`), its first audio stream (or `--audio`) the
//! spectrogram, computed by the library's mel front-end — the official 16 kHz (80 bands,
//! log10) or 44.1 kHz (128 bands, ln) converter, whichever is nearer the audio's rate.
//! Only the samples and frames inside the requested span are kept.

use crate::gst_env;
use anyhow::{Context, Result, anyhow, bail};
use gst::prelude::*;
use mmaudio::Mode;
use mmaudio::mel::MelConverter;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Draw a PNG of a soundtrack: the video's frames (one thumbnail per --frame-interval) above
/// the log-mel spectrogram of its audio, with a time axis in seconds, a frequency axis in Hz,
/// a colour scale in dB (relative to the loudest value, 80 dB shown) and a title (file,
/// --variant, --prompt). The picture covers --start .. --start + --duration, and ends where
/// the audio ends if that comes first.
#[derive(clap::Args, Debug)]
pub struct SpectrogramArgs {
    /// Media file with the video and, unless --audio is given, the audio (e.g. the .mp4
    /// written by `mmaudio generate`). A file with audio only draws the spectrogram alone.
    pub input: PathBuf,
    /// Take the audio from this file instead (e.g. the .wav written by `mmaudio generate`).
    #[arg(long)]
    pub audio: Option<PathBuf>,
    /// Output PNG.
    #[arg(short, long, default_value = "spectrogram.png")]
    pub output: PathBuf,
    /// Start of the span drawn, in seconds from the start of the file.
    #[arg(long, default_value_t = 0.0)]
    pub start: f64,
    /// Length of the span drawn, in seconds (one MMAudio window by default).
    #[arg(long, default_value_t = 8.0)]
    pub duration: f64,
    /// Seconds between two frame thumbnails.
    #[arg(long, default_value_t = 1.0)]
    pub frame_interval: f64,
    /// Horizontal pixels per second.
    #[arg(long, default_value_t = 128)]
    pub px_per_second: u32,
    /// The variant that generated the audio, for the title (e.g. small_16k).
    #[arg(long)]
    pub variant: Option<String>,
    /// The prompt the audio was generated with, for the title.
    #[arg(long)]
    pub prompt: Option<String>,
}

/// What the decoding pipeline collects inside the span.
#[derive(Default)]
struct Collected {
    /// Mono f32 samples from the span start on, at `rate`.
    samples: Vec<f32>,
    rate: u32,
    /// (pts in seconds from the span start, RGB thumbnail `thumb_w × thumb_h`).
    frames: Vec<(f64, Vec<u8>)>,
    thumb: Option<(u32, u32)>,
}

const THUMB_H: u32 = 96;

/// Rate the audio is analysed at: 16 kHz for audio at or below 16 kHz, else 44.1 kHz.
fn analysis_mode(rate: i32) -> Mode {
    if rate <= 16_000 {
        Mode::Khz16
    } else {
        Mode::Khz44
    }
}

fn element(factory: &str) -> Result<gst::Element> {
    gst::ElementFactory::make(factory)
        .build()
        .with_context(|| format!("cannot create the GStreamer element {factory}"))
}

/// A chain `elements… ! fakesink` in `pipeline`, synced to PLAYING; returns its sink pad
/// (for the probe) and its first element's sink pad (to link the decoder to).
fn chain(pipeline: &gst::Pipeline, elements: Vec<gst::Element>) -> Result<(gst::Pad, gst::Pad)> {
    let sink = gst::ElementFactory::make("fakesink")
        .property("sync", false)
        .build()?;
    let mut all = elements;
    all.push(sink.clone());
    pipeline.add_many(&all)?;
    gst::Element::link_many(&all)?;
    for e in &all {
        e.sync_state_with_parent()?;
    }
    Ok((
        sink.static_pad("sink").unwrap(),
        all[0].static_pad("sink").unwrap(),
    ))
}

fn decode(
    path: &Path,
    want_video: bool,
    want_audio: bool,
    a: &SpectrogramArgs,
    out: Arc<Mutex<Collected>>,
) -> Result<()> {
    let pipeline = gst::Pipeline::new();
    let src = gst::ElementFactory::make("filesrc")
        .property(
            "location",
            path.to_str()
                .ok_or_else(|| anyhow!("{} is not valid UTF-8", path.display()))?,
        )
        .build()?;
    let decodebin = element("decodebin")?;
    pipeline.add_many([&src, &decodebin])?;
    src.link(&decodebin)?;

    let start_ns = (a.start * 1e9).round() as u64;
    let end_ns = ((a.start + a.duration) * 1e9).round() as u64;
    let interval_ns = (a.frame_interval * 1e9).round().max(1.0) as u64;
    let taken = Arc::new(Mutex::new((false, false)));
    let weak = pipeline.downgrade();
    let path_name = path.display().to_string();
    decodebin.connect_pad_added(move |_, pad| {
        let Some(pipeline) = weak.upgrade() else {
            return;
        };
        let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
        let Some(s) = caps.structure(0) else { return };
        let name = s.name().to_string();
        let mut taken = taken.lock().unwrap();
        let result = if name.starts_with("audio/") && want_audio && !taken.1 {
            taken.1 = true;
            let mode = analysis_mode(s.get::<i32>("rate").unwrap_or(44_100));
            let rate = mode.sampling_rate();
            let caps = gst::Caps::builder("audio/x-raw")
                .field("format", "F32LE")
                .field("channels", 1i32)
                .field("rate", rate as i32)
                .field("layout", "interleaved")
                .build();
            let out = out.clone();
            (|| -> Result<()> {
                let filter = gst::ElementFactory::make("capsfilter")
                    .property("caps", caps)
                    .build()?;
                let (probe_pad, sink) = chain(
                    &pipeline,
                    vec![element("audioconvert")?, element("audioresample")?, filter],
                )?;
                out.lock().unwrap().rate = rate;
                probe_pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
                    if let Some(b) = info.buffer()
                        && let Some(pts) = b.pts()
                        && let Ok(map) = b.map_readable()
                    {
                        let data: Vec<f32> = map
                            .chunks_exact(4)
                            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                            .collect();
                        let mut o = out.lock().unwrap();
                        // sample index of this buffer's first sample relative to the span
                        let first = (pts.nseconds() as i128 - start_ns as i128) * rate as i128
                            / 1_000_000_000;
                        let span =
                            ((end_ns - start_ns) as u128 * rate as u128 / 1_000_000_000) as i128;
                        for (i, v) in data.iter().enumerate() {
                            let k = first + i as i128;
                            if k >= 0 && k < span {
                                let k = k as usize;
                                if o.samples.len() <= k {
                                    o.samples.resize(k + 1, 0.0);
                                }
                                o.samples[k] = *v;
                            }
                        }
                    }
                    gst::PadProbeReturn::Ok
                });
                pad.link(&sink)?;
                Ok(())
            })()
        } else if name.starts_with("video/") && want_video && !taken.0 {
            taken.0 = true;
            let out = out.clone();
            (|| -> Result<()> {
                let filter = gst::ElementFactory::make("capsfilter")
                    .property(
                        "caps",
                        gst::Caps::builder("video/x-raw")
                            .field("format", "RGB")
                            .field("height", THUMB_H as i32)
                            .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
                            .build(),
                    )
                    .build()?;
                let (probe_pad, sink) = chain(
                    &pipeline,
                    vec![element("videoconvert")?, element("videoscale")?, filter],
                )?;
                let next = Mutex::new(start_ns);
                probe_pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
                    let Some(b) = info.buffer() else {
                        return gst::PadProbeReturn::Ok;
                    };
                    let Some(pts) = b.pts().map(|p| p.nseconds()) else {
                        return gst::PadProbeReturn::Ok;
                    };
                    let mut next = next.lock().unwrap();
                    if pts + 1 < *next || pts >= end_ns {
                        return gst::PadProbeReturn::Ok;
                    }
                    let Some(info) = pad
                        .current_caps()
                        .and_then(|c| gst_video::VideoInfo::from_caps(&c).ok())
                    else {
                        return gst::PadProbeReturn::Ok;
                    };
                    let (w, h) = (info.width(), info.height());
                    let stride = info.stride()[0] as usize;
                    if let Ok(map) = b.map_readable() {
                        let mut rgb = Vec::with_capacity((w * h * 3) as usize);
                        for y in 0..h as usize {
                            let row = &map[y * stride..y * stride + w as usize * 3];
                            rgb.extend_from_slice(row);
                        }
                        let mut o = out.lock().unwrap();
                        o.thumb = Some((w, h));
                        o.frames
                            .push(((pts.saturating_sub(start_ns)) as f64 / 1e9, rgb));
                    }
                    while *next <= pts {
                        *next += interval_ns;
                    }
                    gst::PadProbeReturn::Ok
                });
                pad.link(&sink)?;
                Ok(())
            })()
        } else {
            (|| -> Result<()> {
                let (_, sink) = chain(&pipeline, vec![element("fakesink")?])?;
                pad.link(&sink)?;
                Ok(())
            })()
        };
        if let Err(e) = result {
            let _ = pipeline.post_message(
                gst::message::Error::builder(
                    gst::StreamError::Failed,
                    &format!("{path_name}: cannot decode {name}: {e:#}"),
                )
                .build(),
            );
        }
    });

    pipeline
        .set_state(gst::State::Playing)
        .with_context(|| format!("cannot decode {}", path.display()))?;
    let bus = pipeline.bus().unwrap();
    let mut result = Ok(());
    for msg in bus.iter_timed(gst::ClockTime::NONE) {
        match msg.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => {
                result = Err(anyhow!(
                    "decoding {}: {}{}",
                    path.display(),
                    e.error(),
                    e.debug().map(|d| format!(" ({d})")).unwrap_or_default()
                ));
                break;
            }
            _ => {}
        }
    }
    let _ = pipeline.set_state(gst::State::Null);
    result
}

/// Piecewise-linear approximation of the "magma" colour map, `t` in [0, 1].
fn colour(t: f32) -> [u8; 3] {
    const STOPS: [(f32, [f32; 3]); 6] = [
        (0.0, [0.0, 0.0, 4.0]),
        (0.2, [59.0, 15.0, 112.0]),
        (0.4, [140.0, 41.0, 129.0]),
        (0.6, [222.0, 73.0, 104.0]),
        (0.8, [254.0, 159.0, 109.0]),
        (1.0, [252.0, 253.0, 191.0]),
    ];
    let t = t.clamp(0.0, 1.0);
    for w in STOPS.windows(2) {
        let ((t0, c0), (t1, c1)) = (w[0], w[1]);
        if t <= t1 {
            let f = (t - t0) / (t1 - t0);
            return std::array::from_fn(|i| (c0[i] + f * (c1[i] - c0[i])).round() as u8);
        }
    }
    [252, 253, 191]
}

/// What the picture is of, for its title.
#[derive(Debug, Clone, Default)]
pub struct Title {
    pub file: String,
    pub variant: Option<String>,
    pub prompt: Option<String>,
}

/// The spectrogram to draw: log-mel values `(n_mels, n_frames)` row-major, in the log of
/// the mel converter (`log10` for 16 kHz, `ln` for 44.1 kHz, of magnitudes).
pub struct Spectrogram<'a> {
    pub mel: &'a [f32],
    pub n_mels: usize,
    pub n_frames: usize,
    /// Seconds between two mel frames.
    pub hop_s: f64,
    /// Mel scale range (Hz) of the bands.
    pub fmin: f64,
    pub fmax: f64,
    /// The values are natural logs (else log10).
    pub ln: bool,
}

/// Dynamic range shown, in dB below the loudest value.
const RANGE_DB: f64 = 80.0;
const GLYPH: u32 = 8;
const BAND_PX: u32 = 3;
const MARGIN_LEFT: u32 = 64;
const MARGIN_RIGHT: u32 = 88;
const MARGIN_BOTTOM: u32 = 30;
const TITLE_H: u32 = 2 * (GLYPH + 4) + 4;
const BACKGROUND: [u8; 3] = [24, 24, 24];
const INK: [u8; 3] = [225, 225, 225];

/// An RGB canvas with clipped drawing and 8×8 bitmap text.
struct Canvas {
    w: u32,
    h: u32,
    px: Vec<u8>,
}

impl Canvas {
    fn new(w: u32, h: u32) -> Self {
        Self {
            w,
            h,
            px: BACKGROUND.repeat((w * h) as usize),
        }
    }

    fn put(&mut self, x: i64, y: i64, c: [u8; 3]) {
        if x >= 0 && y >= 0 && (x as u32) < self.w && (y as u32) < self.h {
            let i = ((y as u32 * self.w + x as u32) * 3) as usize;
            self.px[i..i + 3].copy_from_slice(&c);
        }
    }

    fn rect(&mut self, x: i64, y: i64, w: u32, h: u32, c: [u8; 3]) {
        for dy in 0..h as i64 {
            for dx in 0..w as i64 {
                self.put(x + dx, y + dy, c);
            }
        }
    }

    /// Text with its top-left corner at (x, y); characters outside ASCII print as `?`.
    fn text(&mut self, x: i64, y: i64, s: &str, c: [u8; 3]) {
        for (k, ch) in s.chars().enumerate() {
            let code = if ch.is_ascii() && !ch.is_ascii_control() {
                ch as usize
            } else {
                '?' as usize
            };
            let glyph = font8x8::legacy::BASIC_LEGACY[code];
            for (row, bits) in glyph.iter().enumerate() {
                for col in 0..8 {
                    if bits >> col & 1 == 1 {
                        self.put(x + (k as i64) * GLYPH as i64 + col, y + row as i64, c);
                    }
                }
            }
        }
    }

    fn text_right(&mut self, right: i64, y: i64, s: &str, c: [u8; 3]) {
        let w = s.chars().count() as i64 * GLYPH as i64;
        self.text(right - w, y, s, c);
    }
}

/// Cut `s` to `max` characters (an ellipsis marks the cut).
fn fit(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(3)).collect();
        t.push_str("...");
        t
    }
}

/// A tick step for `span` units with at most `max_ticks` ticks: 1, 2 or 5 × 10^k.
fn tick_step(span: f64, max_ticks: f64) -> f64 {
    let raw = (span / max_ticks).max(1e-9);
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag)
}

/// The picture: a title (file, variant, prompt), a strip of frame thumbnails at their
/// times, and the log-mel spectrogram (low frequencies at the bottom) with a time axis in
/// seconds, a frequency axis in Hz (at the bands' mel-scale positions) and a colour scale
/// in dB relative to the loudest value ([`RANGE_DB`] shown). The plot spans `span_s`
/// seconds; the caller makes that no longer than the audio.
#[allow(clippy::too_many_arguments)]
pub fn render(
    spec: &Spectrogram,
    span_s: f64,
    frames: &[(f64, Vec<u8>)],
    thumb: Option<(u32, u32)>,
    px_per_second: u32,
    title: &Title,
) -> (u32, u32, Vec<u8>) {
    let plot_w = ((span_s * px_per_second as f64).round() as u32).max(1);
    // without frames, a row for the axis headings ("Hz", "dB re max") under the title
    let strip_h = if frames.is_empty() { 14 } else { THUMB_H + 4 };
    let spec_h = spec.n_mels as u32 * BAND_PX;
    let width = MARGIN_LEFT + plot_w + MARGIN_RIGHT;
    let height = TITLE_H + strip_h + spec_h + MARGIN_BOTTOM;
    let mut cv = Canvas::new(width, height);
    let (x0, spec_y0) = (MARGIN_LEFT as i64, (TITLE_H + strip_h) as i64);
    let spec_y1 = spec_y0 + spec_h as i64;

    // title: the file and the variant, then the prompt
    let chars = (width / GLYPH).saturating_sub(1) as usize;
    let mut line1 = title.file.clone();
    if let Some(v) = &title.variant {
        line1 += &format!(" - MMAudio {v}");
    }
    cv.text(4, 4, &fit(&line1, chars), INK);
    let line2 = match &title.prompt {
        Some(p) if !p.is_empty() => format!("prompt: \"{p}\""),
        Some(_) => "no prompt".into(),
        None => String::new(),
    };
    cv.text(4, 4 + (GLYPH + 4) as i64, &fit(&line2, chars), INK);

    // thumbnails at their times, clipped to the plot
    if let Some((tw, th)) = thumb {
        for (t, rgb) in frames {
            let fx = (t * px_per_second as f64).round() as i64;
            for y in 0..th.min(THUMB_H) {
                for x in 0..tw {
                    let i = ((y * tw + x) * 3) as usize;
                    if i + 3 <= rgb.len() && fx + (x as i64) < plot_w as i64 {
                        cv.put(
                            x0 + fx + x as i64,
                            TITLE_H as i64 + 2 + y as i64,
                            [rgb[i], rgb[i + 1], rgb[i + 2]],
                        );
                    }
                }
            }
        }
    }

    // the spectrogram, only where there is audio
    let to_db = if spec.ln {
        20.0 / std::f64::consts::LN_10
    } else {
        20.0
    };
    let max = spec.mel.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    if spec.n_frames > 0 && max.is_finite() {
        for x in 0..plot_w {
            let t = (x as f64 + 0.5) / px_per_second as f64;
            let f = ((t / spec.hop_s).round() as usize).min(spec.n_frames - 1);
            for m in 0..spec.n_mels {
                let db = (spec.mel[m * spec.n_frames + f] as f64 - max) * to_db;
                let c = colour((1.0 + db / RANGE_DB) as f32);
                let y = spec_y1 - ((m as u32 + 1) * BAND_PX) as i64;
                cv.rect(x0 + x as i64, y, 1, BAND_PX, c);
            }
        }
    }

    // time axis: ticks and labels in seconds
    let step = tick_step(span_s, (plot_w as f64 / 80.0).max(1.0));
    let mut k = 0u32;
    loop {
        let t = k as f64 * step;
        if t > span_s + 1e-9 {
            break;
        }
        let x = x0 + ((t * px_per_second as f64).round() as i64).min(plot_w as i64 - 1);
        cv.rect(x, spec_y1, 1, 4, INK);
        let label = if step >= 1.0 {
            format!("{t:.0}")
        } else {
            format!("{t:.1}")
        };
        let lw = label.len() as i64 * GLYPH as i64;
        cv.text((x - lw / 2).max(0), spec_y1 + 6, &label, INK);
        k += 1;
    }
    cv.text_right(x0 + plot_w as i64, spec_y1 + 18, "time (s)", INK);

    // frequency axis: Hz at the mel-scale position of each band
    let (mmin, mmax) = (
        mmaudio::mel::hz_to_mel(spec.fmin),
        mmaudio::mel::hz_to_mel(spec.fmax),
    );
    // band m is centred at mel point m + 1 of n_mels + 2 equally spaced points
    let y_of = |hz: f64| -> f64 {
        let b =
            (mmaudio::mel::hz_to_mel(hz) - mmin) / (mmax - mmin) * (spec.n_mels + 1) as f64 - 1.0;
        spec_y1 as f64 - (b + 0.5) * BAND_PX as f64
    };
    let mut last_y = f64::INFINITY;
    for hz in [
        0.0, 250.0, 500.0, 1000.0, 2000.0, 4000.0, 8000.0, 12000.0, 16000.0, 20000.0,
    ] {
        if hz < spec.fmin || hz > spec.fmax {
            continue;
        }
        let y = y_of(hz).clamp(spec_y0 as f64, spec_y1 as f64 - 1.0);
        if last_y - y < GLYPH as f64 + 2.0 {
            continue;
        }
        last_y = y;
        cv.rect(x0 - 4, y as i64, 4, 1, INK);
        cv.text_right(x0 - 6, y as i64 - 4, &format!("{hz:.0}"), INK);
    }
    cv.text(4, spec_y0 - 10, "Hz", INK);

    // colour scale: 0 dB (loudest) at the top, -RANGE_DB at the bottom
    let bar_x = x0 + plot_w as i64 + 10;
    for y in 0..spec_h {
        let frac = 1.0 - y as f32 / (spec_h.max(2) - 1) as f32;
        cv.rect(bar_x, spec_y0 + y as i64, 12, 1, colour(frac));
    }
    let mut db = 0.0;
    while db >= -RANGE_DB {
        let y = spec_y0 + ((-db / RANGE_DB) * (spec_h as f64 - 1.0)).round() as i64;
        cv.rect(bar_x + 12, y, 3, 1, INK);
        cv.text(
            bar_x + 17,
            (y - 4).clamp(spec_y0 - 4, spec_y1 - 4),
            &format!("{db:.0}"),
            INK,
        );
        db -= 20.0;
    }
    cv.text(bar_x, spec_y0 - 16, "dB re max", INK);
    (width, height, cv.px)
}

pub fn run(a: SpectrogramArgs) -> Result<()> {
    if !(a.start.is_finite() && a.start >= 0.0) {
        bail!("--start must be ≥ 0 seconds");
    }
    if !(a.duration.is_finite() && a.duration > 0.0 && a.duration <= 600.0) {
        bail!("--duration must be within (0, 600] seconds");
    }
    if !(a.frame_interval.is_finite() && a.frame_interval > 0.0) {
        bail!("--frame-interval must be > 0 seconds");
    }
    if !(16..=4096).contains(&a.px_per_second) {
        bail!("--px-per-second must be within 16..4096");
    }
    for p in std::iter::once(&a.input).chain(a.audio.as_ref()) {
        if !p.is_file() {
            bail!("{} does not exist or is not a file", p.display());
        }
    }
    gst_env::init()?;
    gst_env::require_elements(&[
        "filesrc",
        "decodebin",
        "audioconvert",
        "audioresample",
        "videoconvert",
        "videoscale",
        "fakesink",
    ])?;
    let collected = Arc::new(Mutex::new(Collected::default()));
    decode(&a.input, true, a.audio.is_none(), &a, collected.clone())?;
    if let Some(audio) = &a.audio {
        decode(audio, false, true, &a, collected.clone())?;
    }
    let c = std::mem::take(&mut *collected.lock().unwrap());
    if c.rate == 0 || c.samples.is_empty() {
        bail!(
            "no audio in {} between {} s and {} s",
            a.audio.as_ref().unwrap_or(&a.input).display(),
            a.start,
            a.start + a.duration
        );
    }
    let mode = analysis_mode(c.rate as i32);
    let mel = MelConverter::for_mode(mode)?;
    let p = mel.params().clone();
    let mut samples = c.samples;
    // the picture ends where the audio does, if that is before the requested span's end
    let audio_s = samples.len() as f64 / c.rate as f64;
    let span_s = a.duration.min(audio_s);
    let frames: Vec<(f64, Vec<u8>)> = c.frames.into_iter().filter(|f| f.0 < span_s).collect();
    // reflect padding needs more than `pad` samples
    if samples.len() <= p.n_fft {
        samples.resize(p.n_fft + 1, 0.0);
    }
    let n = samples.len();
    let wav = candle_core::Tensor::from_vec(samples, (1, n), &candle_core::Device::Cpu)?;
    let spec = mel.forward(&wav)?.squeeze(0)?;
    let (n_mels, n_frames) = spec.dims2()?;
    let values: Vec<f32> = spec.flatten_all()?.to_vec1()?;
    let title = Title {
        file: a
            .input
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        variant: a.variant.clone(),
        prompt: a.prompt.clone(),
    };
    let (w, h, img) = render(
        &Spectrogram {
            mel: &values,
            n_mels,
            n_frames,
            hop_s: p.hop_size as f64 / p.sampling_rate,
            fmin: p.fmin,
            fmax: p.fmax,
            ln: matches!(p.log, mmaudio::mel::LogKind::Ln),
        },
        span_s,
        &frames,
        c.thumb,
        a.px_per_second,
        &title,
    );
    write_png(&a.output, w, h, &img)?;
    println!(
        "wrote {} ({w}×{h}): {} frame(s), {span_s:.3} s of audio at {} Hz, {n_mels} mel bands \
         (0–{:.0} Hz), {RANGE_DB:.0} dB shown",
        a.output.display(),
        frames.len(),
        c.rate,
        p.fmax
    );
    Ok(())
}

fn write_png(path: &Path, w: u32, h: u32, rgb: &[u8]) -> Result<()> {
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), w, h);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc.write_header()?;
    writer.write_image_data(rgb)?;
    writer.finish()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_map_ends() {
        assert_eq!(colour(0.0), [0, 0, 4]);
        assert_eq!(colour(1.0), [252, 253, 191]);
        assert_eq!(colour(-3.0), colour(0.0));
        let mid = colour(0.5);
        assert!(mid[0] > 140 && mid[0] < 222, "{mid:?}");
    }

    fn spec(mel: &[f32], n_mels: usize, n_frames: usize) -> Spectrogram<'_> {
        Spectrogram {
            mel,
            n_mels,
            n_frames,
            hop_s: 0.1,
            fmin: 0.0,
            fmax: 8000.0,
            ln: false,
        }
    }

    #[test]
    fn render_geometry_orientation_and_scales() {
        // 80 bands, 10 frames; energy only in the lowest band → bright pixels at the bottom
        let (n_mels, n_frames) = (80, 10);
        let mut mel = vec![-5.0f32; n_mels * n_frames];
        mel[..n_frames].fill(0.0); // band 0, 100 dB above the rest (log10 magnitudes)
        let thumb = vec![200u8; 4 * THUMB_H as usize * 3];
        let title = Title {
            file: "out.mp4".into(),
            variant: Some("small_16k".into()),
            prompt: Some("rain".into()),
        };
        let (w, h, img) = render(
            &spec(&mel, n_mels, n_frames),
            1.0,
            &[(0.0, thumb)],
            Some((4, THUMB_H)),
            64,
            &title,
        );
        assert_eq!(w, MARGIN_LEFT + 64 + MARGIN_RIGHT);
        assert_eq!(h, TITLE_H + THUMB_H + 4 + 80 * BAND_PX + MARGIN_BOTTOM);
        assert_eq!(img.len(), (w * h * 3) as usize);
        let px = |x: u32, y: u32| {
            let i = ((y * w + x) * 3) as usize;
            [img[i], img[i + 1], img[i + 2]]
        };
        let (x0, strip) = (MARGIN_LEFT, TITLE_H);
        let (spec_top, spec_bottom) = (strip + THUMB_H + 4, strip + THUMB_H + 4 + 80 * BAND_PX);
        assert_eq!(px(x0 + 1, strip + 2), [200, 200, 200], "thumbnail at t=0");
        assert_eq!(
            px(x0 + 10, strip + 2),
            BACKGROUND,
            "nothing after the thumbnail"
        );
        assert_eq!(
            px(x0 + 5, spec_bottom - 1),
            colour(1.0),
            "loudest band at the bottom"
        );
        // 100 dB below the peak is past the 80 dB shown: the bottom of the scale
        assert_eq!(px(x0 + 5, spec_top), colour(0.0), "quiet bands above");
        // the colour bar runs from the loudest colour at the top to the quietest
        let bar = x0 + 64 + 10 + 5;
        assert_eq!(px(bar, spec_top), colour(1.0));
        assert_eq!(px(bar, spec_bottom - 1), colour(0.0));
        // text was drawn in the title, the axes and the scale (ink pixels)
        let ink = |x0: u32, y0: u32, x1: u32, y1: u32| {
            (y0..y1).any(|y| (x0..x1).any(|x| px(x, y) == INK))
        };
        assert!(ink(4, 4, w, 12), "title line 1");
        assert!(ink(4, 16, w, 24), "title line 2");
        assert!(ink(0, spec_top, x0 - 4, spec_bottom), "frequency labels");
        assert!(
            ink(x0, spec_bottom + 6, x0 + 64, spec_bottom + 14),
            "time labels"
        );
        assert!(ink(bar + 12, spec_top, w, spec_bottom), "dB labels");
        // nothing drawn right of the plot except the scale: the audio ends at 1.0 s
        for y in spec_top..spec_bottom {
            for x in x0 + 64..x0 + 64 + 10 {
                assert_eq!(px(x, y), BACKGROUND, "({x}, {y}) past the end of the audio");
            }
        }
    }

    #[test]
    fn ticks_and_text_helpers() {
        assert_eq!(tick_step(8.0, 10.0), 1.0);
        assert_eq!(tick_step(60.0, 10.0), 10.0);
        assert_eq!(tick_step(1.0, 10.0), 0.1);
        assert_eq!(tick_step(30.0, 8.0), 5.0);
        assert_eq!(fit("abcdef", 10), "abcdef");
        assert_eq!(fit("abcdefghijkl", 8), "abcde...");
        // "1" in the 8x8 font has ink; a space has none
        let mut c = Canvas::new(16, 8);
        c.text(0, 0, "1 ", INK);
        assert!(c.px[..8 * 3 * 8].chunks(3).any(|p| p == INK));
        let right: Vec<_> = (0..8)
            .flat_map(|y| (8..16).map(move |x| (x, y)))
            .map(|(x, y)| &c.px[((y * 16 + x) * 3) as usize..((y * 16 + x) * 3 + 3) as usize])
            .collect();
        assert!(right.iter().all(|p| *p == BACKGROUND));
    }

    #[test]
    fn analysis_rates() {
        assert_eq!(analysis_mode(16_000), Mode::Khz16);
        assert_eq!(analysis_mode(8_000), Mode::Khz16);
        assert_eq!(analysis_mode(44_100), Mode::Khz44);
        assert_eq!(analysis_mode(48_000), Mode::Khz44);
    }
}
