//! The official mel converters (`mmaudio/ext/mel_converter.py`): waveform → log-mel, the
//! input of the VAE encoder.
//!
//! waveform clamped to [−1, 1] → reflect pad (n_fft − hop)/2 on each side → STFT (`center =
//! False`, periodic Hann window of `win_size` centred in `n_fft`, one-sided) → magnitude
//! √(re² + im² + 1e−9) → `mel_basis @ magnitude` → log10 (16 kHz) or ln (44.1 kHz) of
//! max(·, 1e−5). Frames: (L + 2·pad − n_fft) / hop + 1.
//!
//! The mel filter bank is librosa's `filters.mel` with its defaults (Slaney mel scale, Slaney
//! area normalisation), computed here in f64 and rounded to f32 the way librosa stores it;
//! the STFT is an f64 FFT. Runs on the CPU (this is not on the generation path); the result
//! is returned on the input's device.

use crate::error::{Error, Result};
use candle_core::{DType, Tensor};

/// Which logarithm compresses the mel energies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogKind {
    Log10,
    Ln,
}

/// Parameters of a mel converter (`MelConverter.__init__`).
#[derive(Debug, Clone, PartialEq)]
pub struct MelParams {
    pub sampling_rate: f64,
    pub n_fft: usize,
    pub num_mels: usize,
    pub hop_size: usize,
    pub win_size: usize,
    pub fmin: f64,
    pub fmax: f64,
    pub log: LogKind,
}

impl MelParams {
    /// `get_mel_converter(mode)`.
    pub fn for_mode(mode: crate::Mode) -> Self {
        match mode {
            crate::Mode::Khz16 => Self {
                sampling_rate: 16_000.0,
                n_fft: 1024,
                num_mels: 80,
                hop_size: 256,
                win_size: 1024,
                fmin: 0.0,
                fmax: 8_000.0,
                log: LogKind::Log10,
            },
            crate::Mode::Khz44 => Self {
                sampling_rate: 44_100.0,
                n_fft: 2048,
                num_mels: 128,
                hop_size: 512,
                win_size: 2048,
                fmin: 0.0,
                fmax: 44_100.0 / 2.0,
                log: LogKind::Ln,
            },
        }
    }

    /// Reflect padding on each side: `int((n_fft − hop) / 2)`.
    pub fn pad(&self) -> usize {
        (self.n_fft - self.hop_size) / 2
    }

    /// Number of frames for a waveform of `len` samples.
    pub fn num_frames(&self, len: usize) -> usize {
        let padded = len + 2 * self.pad();
        if padded < self.n_fft {
            0
        } else {
            (padded - self.n_fft) / self.hop_size + 1
        }
    }

    fn validate(&self) -> Result<()> {
        if self.n_fft < 2
            || self.hop_size == 0
            || self.hop_size > self.n_fft
            || self.win_size == 0
            || self.win_size > self.n_fft
            || self.num_mels == 0
            || self.sampling_rate.is_nan()
            || self.sampling_rate <= 0.0
            || self.fmax.is_nan()
            || self.fmin.is_nan()
            || self.fmax <= self.fmin
        {
            return Err(Error::config(format!("invalid mel parameters {self:?}")));
        }
        Ok(())
    }
}

// --- Slaney mel scale (librosa `hz_to_mel` / `mel_to_hz` with htk = False) -------------------

const F_SP: f64 = 200.0 / 3.0;
const MIN_LOG_HZ: f64 = 1000.0;
const MIN_LOG_MEL: f64 = MIN_LOG_HZ / F_SP;

fn logstep() -> f64 {
    6.4f64.ln() / 27.0
}

pub fn hz_to_mel(f: f64) -> f64 {
    if f >= MIN_LOG_HZ {
        MIN_LOG_MEL + (f / MIN_LOG_HZ).ln() / logstep()
    } else {
        f / F_SP
    }
}

pub fn mel_to_hz(m: f64) -> f64 {
    if m >= MIN_LOG_MEL {
        MIN_LOG_HZ * (logstep() * (m - MIN_LOG_MEL)).exp()
    } else {
        F_SP * m
    }
}

/// librosa `filters.mel(sr, n_fft, n_mels, fmin, fmax)` (Slaney scale and norm), row-major
/// (n_mels, n_fft/2 + 1), f32.
pub fn mel_filterbank(sr: f64, n_fft: usize, n_mels: usize, fmin: f64, fmax: f64) -> Vec<f32> {
    let n_freq = n_fft / 2 + 1;
    let fftfreqs: Vec<f64> = (0..n_freq).map(|k| k as f64 * sr / n_fft as f64).collect();
    let (mmin, mmax) = (hz_to_mel(fmin), hz_to_mel(fmax));
    let n_pts = n_mels + 2;
    let mel_f: Vec<f64> = (0..n_pts)
        .map(|i| {
            let m = if n_pts > 1 {
                mmin + (mmax - mmin) * i as f64 / (n_pts - 1) as f64
            } else {
                mmin
            };
            mel_to_hz(m)
        })
        .collect();
    let mut w = vec![0f32; n_mels * n_freq];
    for i in 0..n_mels {
        let fd_lo = mel_f[i + 1] - mel_f[i];
        let fd_hi = mel_f[i + 2] - mel_f[i + 1];
        let enorm = 2.0 / (mel_f[i + 2] - mel_f[i]);
        for (k, &f) in fftfreqs.iter().enumerate() {
            let lower = -(mel_f[i] - f) / fd_lo;
            let upper = (mel_f[i + 2] - f) / fd_hi;
            let v = 0f64.max(lower.min(upper)) as f32; // stored as float32 by librosa
            w[i * n_freq + k] = (v as f64 * enorm) as f32; // in-place f32 *= f64
        }
    }
    w
}

/// `torch.hann_window(n)` (periodic), evaluated in f32 as torch does:
/// 0.5 − 0.5·cos(i · f32(2π/n)).
pub fn hann_window(n: usize) -> Vec<f32> {
    let step = (2.0 * std::f64::consts::PI / n as f64) as f32;
    (0..n)
        .map(|i| 0.5f32 - 0.5f32 * (i as f32 * step).cos())
        .collect()
}

// --- FFT ---------------------------------------------------------------------------------------

/// Real-input DFT, one-sided, in f64: radix-2 for powers of two, a direct DFT otherwise.
struct RealDft {
    n: usize,
    /// twiddles e^{−2πik/n}, k < n/2 (radix-2) or k < n (direct)
    tw: Vec<(f64, f64)>,
    rev: Vec<usize>,
}

impl RealDft {
    fn new(n: usize) -> Self {
        let pow2 = n.is_power_of_two();
        let m = if pow2 { n / 2 } else { n };
        let tw = (0..m)
            .map(|k| {
                let a = -2.0 * std::f64::consts::PI * k as f64 / n as f64;
                (a.cos(), a.sin())
            })
            .collect();
        let rev = if pow2 {
            let bits = n.trailing_zeros();
            (0..n)
                .map(|i| {
                    if bits == 0 {
                        0
                    } else {
                        i.reverse_bits() >> (usize::BITS - bits)
                    }
                })
                .collect()
        } else {
            Vec::new()
        };
        Self { n, tw, rev }
    }

    /// `out[k] = Σ x[j] e^{−2πijk/n}`, k ≤ n/2.
    fn forward(&self, x: &[f64], buf: &mut Vec<(f64, f64)>, out: &mut [(f64, f64)]) {
        let n = self.n;
        if self.rev.is_empty() {
            for (k, o) in out.iter_mut().enumerate() {
                let (mut re, mut im) = (0.0, 0.0);
                for (j, &v) in x.iter().enumerate() {
                    let (c, s) = self.tw[(j * k) % n];
                    re += v * c;
                    im += v * s;
                }
                *o = (re, im);
            }
            return;
        }
        buf.clear();
        buf.extend(self.rev.iter().map(|&r| (x[r], 0.0)));
        let mut len = 2;
        while len <= n {
            let step = n / len;
            for start in (0..n).step_by(len) {
                for j in 0..len / 2 {
                    let (wr, wi) = self.tw[j * step];
                    let (ar, ai) = buf[start + j];
                    let (br, bi) = buf[start + j + len / 2];
                    let (tr, ti) = (br * wr - bi * wi, br * wi + bi * wr);
                    buf[start + j] = (ar + tr, ai + ti);
                    buf[start + j + len / 2] = (ar - tr, ai - ti);
                }
            }
            len *= 2;
        }
        out.copy_from_slice(&buf[..n / 2 + 1]);
    }
}

/// A mel converter with its filter bank and window.
#[derive(Debug, Clone)]
pub struct MelConverter {
    params: MelParams,
    /// (num_mels, n_fft/2 + 1) row-major
    mel_basis: Vec<f32>,
    /// win_size values
    window: Vec<f32>,
}

/// Mel spectrogram and the STFT magnitude it was made from.
#[derive(Debug, Clone)]
pub struct MelOutput {
    /// (B, num_mels, frames), f32
    pub mel: Tensor,
    /// (B, n_fft/2 + 1, frames), f32
    pub magnitude: Tensor,
}

impl MelConverter {
    pub fn new(params: MelParams) -> Result<Self> {
        params.validate()?;
        let mel_basis = mel_filterbank(
            params.sampling_rate,
            params.n_fft,
            params.num_mels,
            params.fmin,
            params.fmax,
        );
        let window = hann_window(params.win_size);
        Ok(Self {
            params,
            mel_basis,
            window,
        })
    }

    pub fn for_mode(mode: crate::Mode) -> Result<Self> {
        Self::new(MelParams::for_mode(mode))
    }

    pub fn params(&self) -> &MelParams {
        &self.params
    }

    /// The filter bank, (num_mels, n_fft/2 + 1).
    pub fn mel_basis(&self) -> &[f32] {
        &self.mel_basis
    }

    pub fn window(&self) -> &[f32] {
        &self.window
    }

    /// waveform (B, L) → log-mel (B, num_mels, frames).
    pub fn forward(&self, wav: &Tensor) -> Result<Tensor> {
        Ok(self.forward_full(wav)?.mel)
    }

    /// waveform (B, L) → log-mel and STFT magnitude.
    pub fn forward_full(&self, wav: &Tensor) -> Result<MelOutput> {
        let p = &self.params;
        let (b, len) = wav.dims2()?;
        let pad = p.pad();
        if len <= pad {
            return Err(Error::input(format!(
                "mel: waveform of {len} samples is too short for reflect padding {pad}"
            )));
        }
        let frames = p.num_frames(len);
        if frames == 0 {
            return Err(Error::input(format!(
                "mel: waveform of {len} samples is shorter than one frame"
            )));
        }
        let data: Vec<f32> = wav
            .to_dtype(DType::F32)?
            .to_device(&candle_core::Device::Cpu)?
            .flatten_all()?
            .to_vec1()?;
        let n_fft = p.n_fft;
        let n_freq = n_fft / 2 + 1;
        // window centred in n_fft (torch.stft pads a shorter window on both sides)
        let mut win = vec![0f64; n_fft];
        let off = (n_fft - p.win_size) / 2;
        for (i, &w) in self.window.iter().enumerate() {
            win[off + i] = w as f64;
        }
        let dft = RealDft::new(n_fft);
        let mut mag = vec![0f32; b * n_freq * frames];
        let mut mel = vec![0f32; b * p.num_mels * frames];
        let mut padded = vec![0f64; len + 2 * pad];
        let mut frame = vec![0f64; n_fft];
        let mut buf = Vec::with_capacity(n_fft);
        let mut spec = vec![(0f64, 0f64); n_freq];
        let mut col = vec![0f32; n_freq];
        for bi in 0..b {
            let x = &data[bi * len..(bi + 1) * len];
            let clamp = |v: f32| v.clamp(-1.0, 1.0) as f64;
            for (i, v) in padded.iter_mut().enumerate() {
                // reflect (without repeating the edge sample)
                let j = i as isize - pad as isize;
                let j = if j < 0 {
                    -j
                } else if j >= len as isize {
                    2 * (len as isize - 1) - j
                } else {
                    j
                };
                *v = clamp(x[j as usize]);
            }
            for f in 0..frames {
                let s = f * p.hop_size;
                for (i, v) in frame.iter_mut().enumerate() {
                    *v = padded[s + i] * win[i];
                }
                dft.forward(&frame, &mut buf, &mut spec);
                for (k, &(re, im)) in spec.iter().enumerate() {
                    // torch: magnitude of the f32 spectrum
                    let (re, im) = (re as f32, im as f32);
                    let m = (re * re + im * im + 1e-9).sqrt();
                    col[k] = m;
                    mag[(bi * n_freq + k) * frames + f] = m;
                }
                for m in 0..p.num_mels {
                    let row = &self.mel_basis[m * n_freq..(m + 1) * n_freq];
                    let e: f64 = row
                        .iter()
                        .zip(&col)
                        .map(|(&w, &c)| w as f64 * c as f64)
                        .sum();
                    let e = (e as f32).max(1e-5);
                    mel[(bi * p.num_mels + m) * frames + f] = match p.log {
                        LogKind::Log10 => e.log10(),
                        LogKind::Ln => e.ln(),
                    };
                }
            }
        }
        let dev = wav.device();
        Ok(MelOutput {
            mel: Tensor::from_vec(mel, (b, p.num_mels, frames), dev)?,
            magnitude: Tensor::from_vec(mag, (b, n_freq, frames), dev)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dft_matches_direct_sum() {
        for n in [8usize, 12, 64] {
            let x: Vec<f64> = (0..n).map(|i| ((i * 7 + 3) % 11) as f64 - 5.0).collect();
            let dft = RealDft::new(n);
            let mut out = vec![(0.0, 0.0); n / 2 + 1];
            dft.forward(&x, &mut Vec::new(), &mut out);
            for (k, &(re, im)) in out.iter().enumerate() {
                let (mut r, mut i) = (0.0, 0.0);
                for (j, &v) in x.iter().enumerate() {
                    let a = -2.0 * std::f64::consts::PI * (j * k) as f64 / n as f64;
                    r += v * a.cos();
                    i += v * a.sin();
                }
                assert!(
                    (re - r).abs() < 1e-9 && (im - i).abs() < 1e-9,
                    "n={n} k={k}"
                );
            }
        }
    }

    #[test]
    fn slaney_scale_round_trip_and_break_point() {
        assert!((hz_to_mel(1000.0) - 15.0).abs() < 1e-12);
        for f in [0.0, 440.0, 999.0, 1000.0, 4000.0, 22050.0] {
            assert!((mel_to_hz(hz_to_mel(f)) - f).abs() < 1e-6 * f.max(1.0));
        }
    }

    #[test]
    fn frames_formula_and_short_input() {
        let c = MelConverter::for_mode(crate::Mode::Khz16).unwrap();
        assert_eq!(c.params().num_frames(8192), 32);
        assert_eq!(c.params().num_frames(128_000), 500);
        let short = Tensor::zeros((1, 100), DType::F32, &candle_core::Device::Cpu).unwrap();
        let e = c.forward(&short).unwrap_err().to_string();
        assert!(e.contains("too short"), "{e}");
    }
}
