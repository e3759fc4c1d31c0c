//! Shared test helpers: plugin registration and deterministic fake generators injected
//! through `MMAudioGen::set_generator_factory`.
#![allow(dead_code)]
// `mmaudio::Error` (returned by the generator closures) is large by design.
#![allow(clippy::result_large_err)]

use gst::prelude::*;
use mmaudio::generator::{AudioGenerator, LoadOptions};
use mmaudio::request::{Cancel, WindowRequest};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::time::{Duration, Instant};

pub fn init() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        gst::init().unwrap();
        gstmmaudio::plugin_register_static().expect("register the mmaudio plugin");
    });
}

/// What a fake generator saw for one window.
#[derive(Debug, Clone)]
pub struct Seen {
    pub index: u64,
    pub start: f64,
    pub duration: f64,
    /// (relative pts, width, height, data)
    pub frames: Vec<(f64, usize, usize, Arc<Vec<u8>>)>,
    pub prompt: String,
    pub seed: u64,
    /// Every generation setting the window was asked with.
    pub params: mmaudio::request::GenerationParams,
}

pub type Log = Arc<Mutex<Vec<Seen>>>;

pub fn new_log() -> Log {
    Arc::new(Mutex::new(Vec::new()))
}

#[derive(Clone)]
pub enum Behaviour {
    /// `0.5 · sin(2π f t)` at the absolute time `t` of each sample.
    Tone(f64),
    Constant(f32),
    /// The first byte of the window's first frame / 255 (0 without frames).
    FirstPixel,
    /// Sleep, then a constant.
    Sleep(Duration),
    /// Fail on window `n`, tone otherwise.
    FailAt(u64),
    /// Report the window index on `started`, then wait for the cancel (at most 20 s);
    /// only for the first window if `first_only`, FirstPixel afterwards.
    BlockUntilCancel {
        first_only: bool,
        started: Arc<Mutex<mpsc::Sender<u64>>>,
    },
    /// Wait until the gate is open, then FirstPixel.
    Gate(Arc<(Mutex<bool>, Condvar)>),
}

pub struct Fake {
    rate: u32,
    behaviour: Behaviour,
    log: Log,
    calls: u64,
}

impl Fake {
    pub fn new(rate: u32, behaviour: Behaviour, log: Log) -> Self {
        Self {
            rate,
            behaviour,
            log,
            calls: 0,
        }
    }
}

pub fn tone(freq: f64, t: f64) -> f32 {
    (0.5 * (2.0 * std::f64::consts::PI * freq * t).sin()) as f32
}

fn first_pixel(req: &WindowRequest) -> f32 {
    req.frames
        .first()
        .map_or(0.0, |f| f.data.first().copied().unwrap_or(0) as f32 / 255.0)
}

impl AudioGenerator for Fake {
    fn sample_rate(&self) -> u32 {
        self.rate
    }

    fn generate(&mut self, req: &WindowRequest, cancel: &Cancel) -> mmaudio::Result<Vec<f32>> {
        self.log.lock().unwrap().push(Seen {
            index: req.index,
            start: req.start,
            duration: req.duration,
            frames: req
                .frames
                .iter()
                .map(|f| (f.pts, f.width, f.height, f.data.clone()))
                .collect(),
            prompt: req.params.prompt.clone(),
            seed: req.params.seed,
            params: req.params.clone(),
        });
        let calls = self.calls;
        self.calls += 1;
        let n = req.num_samples(self.rate);
        let rate = self.rate as f64;
        let tone_out = |f: f64| -> Vec<f32> {
            (0..n)
                .map(|i| tone(f, req.start + i as f64 / rate))
                .collect()
        };
        match &self.behaviour {
            Behaviour::Tone(f) => Ok(tone_out(*f)),
            Behaviour::Constant(v) => Ok(vec![*v; n]),
            Behaviour::FirstPixel => Ok(vec![first_pixel(req); n]),
            Behaviour::Sleep(d) => {
                std::thread::sleep(*d);
                Ok(vec![0.25; n])
            }
            Behaviour::FailAt(k) if *k == req.index => {
                Err(mmaudio::Error::input("synthetic generator failure"))
            }
            Behaviour::FailAt(_) => Ok(tone_out(440.0)),
            Behaviour::BlockUntilCancel {
                first_only,
                started,
            } => {
                if *first_only && calls > 0 {
                    return Ok(vec![first_pixel(req); n]);
                }
                let _ = started.lock().unwrap().send(req.index);
                let t0 = Instant::now();
                while t0.elapsed() < Duration::from_secs(20) {
                    cancel.check()?;
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(mmaudio::Error::input("test generator was never cancelled"))
            }
            Behaviour::Gate(gate) => {
                let (m, c) = &**gate;
                let mut open = m.lock().unwrap();
                while !*open {
                    open = c.wait(open).unwrap();
                }
                Ok(vec![first_pixel(req); n])
            }
        }
    }
}

/// A `mmaudiogen` whose generator is a [`Fake`]; `loads` counts factory calls.
pub fn element_with(
    rate: u32,
    behaviour: Behaviour,
    log: &Log,
    loads: Option<Arc<AtomicUsize>>,
) -> gst::Element {
    init();
    let element = gst::ElementFactory::make("mmaudiogen").build().unwrap();
    let log = log.clone();
    element
        .downcast_ref::<gstmmaudio::MMAudioGen>()
        .unwrap()
        .set_generator_factory(move |_opts: &LoadOptions| {
            if let Some(l) = &loads {
                l.fetch_add(1, Ordering::SeqCst);
            }
            Ok(Box::new(Fake::new(rate, behaviour.clone(), log.clone()))
                as Box<dyn AudioGenerator>)
        });
    element
}

/// Frames prepared on arrival, as a generator that asks for them saw them.
pub type PreparedLog = Arc<Mutex<Vec<Arc<mmaudio::request::PreparedFrame>>>>;

/// A generator that asks for frames prepared on arrival (as the MMAudio one does), records
/// them and returns silence.
pub struct PreparedFake {
    rate: u32,
    log: PreparedLog,
}

impl AudioGenerator for PreparedFake {
    fn sample_rate(&self) -> u32 {
        self.rate
    }
    fn wants_prepared_frames(&self) -> bool {
        true
    }
    fn generate(&mut self, req: &WindowRequest, _cancel: &Cancel) -> mmaudio::Result<Vec<f32>> {
        let mut log = self.log.lock().unwrap();
        for f in &req.frames {
            log.push(f.prepared.clone().expect("frames are prepared on arrival"));
        }
        Ok(vec![0.0; req.num_samples(self.rate)])
    }
}

/// A `mmaudiogen` whose generator is a [`PreparedFake`].
pub fn element_prepared(rate: u32, log: &PreparedLog) -> gst::Element {
    init();
    let element = gst::ElementFactory::make("mmaudiogen").build().unwrap();
    let log = log.clone();
    element
        .downcast_ref::<gstmmaudio::MMAudioGen>()
        .unwrap()
        .set_generator_factory(move |_opts: &LoadOptions| {
            Ok(Box::new(PreparedFake {
                rate,
                log: log.clone(),
            }) as Box<dyn AudioGenerator>)
        });
    element
}

/// Expected output for [`Behaviour::Tone`] at output sample `s` of a stream starting at
/// `origin_s`, with the element's window geometry (in samples).
pub fn expected_tone(
    freq: f64,
    origin_s: f64,
    rate: u32,
    window: u64,
    overlap: u64,
    total: u64,
) -> Vec<f32> {
    let hop = window - overlap;
    let last = if total <= window {
        0
    } else {
        (total - window).div_ceil(hop)
    };
    (0..total)
        .map(|s| {
            let t = origin_s + s as f64 / rate as f64;
            let v = tone(freq, t);
            let k = (s / hop).min(last);
            if k > 0 && s < k * hop + overlap {
                let (a, b) = documented_crossfade((s - k * hop) as usize, overlap as usize);
                v * (a + b)
            } else {
                v
            }
        })
        .collect()
}

/// The crossfade weights `(cos θ, sin θ)`, θ = π/2 · (i + ½)/n, written out from the
/// element's documentation rather than taken from the code under test.
pub fn documented_crossfade(i: usize, n: usize) -> (f32, f32) {
    let theta = std::f64::consts::PI / 2.0 * (i as f64 + 0.5) / n as f64;
    (theta.cos() as f32, theta.sin() as f32)
}

/// Read a WAV file's sample count and format (bits per sample, channels, rate).
pub fn wav_info(path: &std::path::Path) -> (u64, u16, u16, u32) {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert_eq!(&data[0..4], b"RIFF", "{} is not a WAV file", path.display());
    let mut pos = 12;
    let (mut bits, mut channels, mut rate) = (0u16, 0u16, 0u32);
    while pos + 8 <= data.len() {
        let id = &data[pos..pos + 4];
        let size = u32::from_le_bytes(data[pos + 4..pos + 8].try_into().unwrap()) as usize;
        let body = &data[pos + 8..];
        if id == b"fmt " {
            channels = u16::from_le_bytes(body[2..4].try_into().unwrap());
            rate = u32::from_le_bytes(body[4..8].try_into().unwrap());
            bits = u16::from_le_bytes(body[14..16].try_into().unwrap());
        } else if id == b"data" {
            let frame = (bits as u64 / 8) * channels as u64;
            return (size as u64 / frame, bits, channels, rate);
        }
        pos += 8 + size + (size & 1);
    }
    panic!("no data chunk in {}", path.display());
}

fn scratch_root() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("mmaudiogen-tests-{}", std::process::id()))
}

extern "C" fn remove_scratch_root() {
    if std::env::var_os("MMAUDIO_KEEP_TEST_FILES").is_none() {
        let _ = std::fs::remove_dir_all(scratch_root());
    }
}

unsafe extern "C" {
    fn atexit(f: extern "C" fn()) -> std::ffi::c_int;
}

/// A scratch directory for this test process, removed when the process exits (set
/// `MMAUDIO_KEEP_TEST_FILES` to keep it for a look).
pub fn scratch_dir(name: &str) -> std::path::PathBuf {
    static ONCE: std::sync::Once = std::sync::Once::new();
    // SAFETY: registers a plain function that only removes a folder.
    ONCE.call_once(|| unsafe {
        atexit(remove_scratch_root);
    });
    let dir = scratch_root().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
