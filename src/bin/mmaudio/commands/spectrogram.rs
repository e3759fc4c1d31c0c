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

/// The picture: a strip of frame thumbnails at their times, a tick row (one tick per
/// second), and the log-mel spectrogram (low frequencies at the bottom), 80 dB range.
#[allow(clippy::too_many_arguments)]
pub fn render(
    mel: &[f32],
    n_mels: usize,
    n_frames: usize,
    hop_s: f64,
    span_s: f64,
    frames: &[(f64, Vec<u8>)],
    thumb: Option<(u32, u32)>,
    px_per_second: u32,
) -> (u32, u32, Vec<u8>) {
    let width = ((span_s * px_per_second as f64).round() as u32).max(1);
    let band_px = 3u32;
    let strip_h = if frames.is_empty() { 0 } else { THUMB_H + 4 };
    let tick_h = 6u32;
    let spec_h = n_mels as u32 * band_px;
    let height = strip_h + tick_h + spec_h;
    let mut img = vec![24u8; (width * height * 3) as usize];
    let put = |img: &mut Vec<u8>, x: u32, y: u32, c: [u8; 3]| {
        if x < width && y < height {
            let i = ((y * width + x) * 3) as usize;
            img[i..i + 3].copy_from_slice(&c);
        }
    };
    if let Some((tw, th)) = thumb {
        for (t, rgb) in frames {
            let x0 = (t * px_per_second as f64).round() as u32;
            for y in 0..th.min(THUMB_H) {
                for x in 0..tw {
                    let i = ((y * tw + x) * 3) as usize;
                    if i + 3 <= rgb.len() {
                        put(&mut img, x0 + x, 2 + y, [rgb[i], rgb[i + 1], rgb[i + 2]]);
                    }
                }
            }
        }
    }
    for s in 0..=span_s.floor() as u32 {
        let x = (s as f64 * px_per_second as f64).round() as u32;
        for y in strip_h..strip_h + tick_h {
            put(&mut img, x.min(width - 1), y, [220, 220, 220]);
        }
    }
    if n_frames > 0 {
        let max = mel.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        // values are log10 (16k) or ln (44k) of magnitudes; show the top 4 decades
        let floor = max
            - 4.0
                * if n_mels == 80 {
                    1.0
                } else {
                    std::f32::consts::LN_10
                };
        for x in 0..width {
            let t = x as f64 / px_per_second as f64;
            let f = ((t / hop_s) as usize).min(n_frames - 1);
            for m in 0..n_mels {
                let v = mel[m * n_frames + f];
                let c = colour((v - floor) / (max - floor).max(1e-6));
                for k in 0..band_px {
                    let y = strip_h + tick_h + (n_mels - 1 - m) as u32 * band_px + k;
                    put(&mut img, x, y, c);
                }
            }
        }
    }
    (width, height, img)
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
    // reflect padding needs more than `pad` samples
    if samples.len() <= p.n_fft {
        samples.resize(p.n_fft + 1, 0.0);
    }
    let n = samples.len();
    let wav = candle_core::Tensor::from_vec(samples, (1, n), &candle_core::Device::Cpu)?;
    let spec = mel.forward(&wav)?.squeeze(0)?;
    let (n_mels, n_frames) = spec.dims2()?;
    let values: Vec<f32> = spec.flatten_all()?.to_vec1()?;
    let (w, h, img) = render(
        &values,
        n_mels,
        n_frames,
        p.hop_size as f64 / p.sampling_rate,
        a.duration,
        &c.frames,
        c.thumb,
        a.px_per_second,
    );
    write_png(&a.output, w, h, &img)?;
    println!(
        "wrote {} ({w}×{h}): {} frame(s), {:.3} s of audio at {} Hz, {n_mels} mel bands",
        a.output.display(),
        c.frames.len(),
        n as f64 / c.rate as f64,
        c.rate
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

    #[test]
    fn render_geometry_and_orientation() {
        // 80 bands, 10 frames; energy only in the lowest band → bright pixels at the bottom
        let (n_mels, n_frames) = (80, 10);
        let mut mel = vec![-5.0f32; n_mels * n_frames];
        mel[..n_frames].fill(0.0); // band 0
        let thumb = vec![200u8; 4 * THUMB_H as usize * 3];
        let (w, h, img) = render(
            &mel,
            n_mels,
            n_frames,
            0.1,
            1.0,
            &[(0.0, thumb)],
            Some((4, THUMB_H)),
            32,
        );
        assert_eq!(w, 32);
        assert_eq!(h, THUMB_H + 4 + 6 + 80 * 3);
        assert_eq!(img.len(), (w * h * 3) as usize);
        let px = |x: u32, y: u32| {
            let i = ((y * w + x) * 3) as usize;
            [img[i], img[i + 1], img[i + 2]]
        };
        assert_eq!(px(1, 2), [200, 200, 200], "thumbnail drawn at t=0");
        assert_eq!(px(10, 2), [24, 24, 24], "background after the thumbnail");
        assert_eq!(px(5, h - 1), colour(1.0), "loudest band at the bottom");
        assert_eq!(px(5, h - 3 * 80), colour(0.0), "silent band above");
    }

    #[test]
    fn analysis_rates() {
        assert_eq!(analysis_mode(16_000), Mode::Khz16);
        assert_eq!(analysis_mode(8_000), Mode::Khz16);
        assert_eq!(analysis_mode(44_100), Mode::Khz44);
        assert_eq!(analysis_mode(48_000), Mode::Khz44);
    }
}
