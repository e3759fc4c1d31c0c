//! The whole generator in reduced precision on the CPU, with tiny random test models of both
//! modes. On the CPU bf16/f16 take the generic candle paths (the fast CPU kernels are f32
//! only), which are the ones a CUDA build runs: this keeps those paths working (dtypes,
//! shapes, f32 islands) where CI has no GPU. The output must have the exact length, be
//! finite, and follow the f32 output (same seed and weights).

use mmaudio::Mode;
use mmaudio::generator::LoadOptions;
use mmaudio::model::load_generator;
use mmaudio::request::{Cancel, GenerationParams, VideoFrame, WindowRequest};
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn model(mode: Mode) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "mmaudio-precision-{:?}-{}",
        mode,
        std::process::id()
    ));
    mmaudio::test_model::write_test_model(&dir, mode, 7).unwrap();
    dir
}

/// 1.5 s of 10 fps frames of a moving gradient.
fn request() -> WindowRequest {
    let (w, h) = (48usize, 32usize);
    let frames = (0..15)
        .map(|k| {
            let data: Vec<u8> = (0..w * h * 3)
                .map(|i| ((i / 3 % w) * 5 + k * 17 + (i % 3) * 60) as u8)
                .collect();
            VideoFrame::rgb(k as f64 / 10.0, w, h, Arc::new(data))
        })
        .collect();
    WindowRequest {
        index: 0,
        start: 0.0,
        duration: 1.5,
        frames,
        params: GenerationParams {
            prompt: "a ball bouncing".into(),
            num_steps: 4,
            seed: 3,
            ..Default::default()
        },
        ..Default::default()
    }
}

fn generate(dir: &Path, mode: Mode, precision: &str) -> (Vec<f32>, u32) {
    let variant = match mode {
        Mode::Khz16 => mmaudio::Variant::Small16k,
        Mode::Khz44 => mmaudio::Variant::Small44k,
    };
    let mut g = load_generator(&LoadOptions {
        model_dir: dir.to_path_buf(),
        variant: Some(variant),
        device: "cpu".into(),
        precision: precision.into(),
    })
    .unwrap_or_else(|e| panic!("load {precision}: {e}"));
    let wav = g
        .generate(&request(), &Cancel::default())
        .unwrap_or_else(|e| panic!("generate {precision}: {e}"));
    (wav, g.sample_rate())
}

fn corr(a: &[f32], b: &[f32]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (
        a.iter().map(|&x| x as f64).sum::<f64>() / n,
        b.iter().map(|&x| x as f64).sum::<f64>() / n,
    );
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (x as f64 - ma, y as f64 - mb);
        sab += x * y;
        saa += x * x;
        sbb += y * y;
    }
    sab / (saa * sbb).sqrt()
}

/// Correlation with the f32 output measured on CPU (2026-12-07, x86-64 AVX2, this test's
/// seeded model and request), per (mode, precision); the test fails below measured − MARGIN.
const MEASURED: [(Mode, &str, f64); 4] = [
    (Mode::Khz16, "bf16", 0.9390),
    (Mode::Khz16, "f16", 0.9969),
    (Mode::Khz44, "bf16", 0.8999),
    (Mode::Khz44, "f16", 0.9975),
];
/// Room for another CPU's summation order (the values are deterministic on one machine);
/// a real regression of the reduced-precision paths costs far more than this.
const MARGIN: f64 = 0.02;

#[test]
fn bf16_and_f16_generation_follow_f32() {
    for mode in [Mode::Khz16, Mode::Khz44] {
        let dir = model(mode);
        let (reference, rate) = generate(&dir, mode, "f32");
        let want = (1.5 * rate as f64).round() as usize;
        assert_eq!(reference.len(), want);
        for precision in ["bf16", "f16"] {
            let (wav, r) = generate(&dir, mode, precision);
            assert_eq!(r, rate);
            assert_eq!(wav.len(), want, "{mode:?} {precision}");
            assert!(
                wav.iter().all(|v| v.is_finite()),
                "{mode:?} {precision}: non-finite samples"
            );
            let c = corr(&reference, &wav);
            eprintln!("{mode:?} {precision}: correlation with f32 {c:.4}");
            let measured = MEASURED
                .iter()
                .find(|(m, p, _)| *m == mode && *p == precision)
                .unwrap()
                .2;
            assert!(
                c >= measured - MARGIN,
                "{mode:?} {precision}: correlation with f32 {c:.4}, measured {measured} − {MARGIN}"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
