//! Joining two windows' audio over a stretch both cover, without a level bump or a sample
//! beyond full scale.
//!
//! * [`crossfade_weights`]: the constant-power curve `(cos θ, sin θ)`,
//!   `θ = π/2 · (i + ½)/n` (so `w_out² + w_in² = 1` exactly, and the two halves are
//!   symmetric). It keeps the level of two *uncorrelated* signals: the right curve for
//!   `windows` mode, whose windows are independent generations.
//! * [`crossfade_weights_correlated`]: the power-preserving curve for two signals of
//!   correlation `ρ` (R. Bristow-Johnson's rule: with the even and odd parts `e`, `o` of the
//!   fade-in, the mixed power `2(1+ρ)e² + 2(1−ρ)o²` is held at 1). `ρ = 0` gives the
//!   constant-power curve, `ρ = 1` the constant-gain curve `w_out + w_in = 1` (no +3 dB
//!   bump when both sides carry the same sound). The odd part is that of the
//!   constant-power curve, `o = (sin θ − cos θ)/2`. `continuation` mode uses it with `ρ`
//!   measured over the fade: its two sides are two decodes of the *same* latents, so
//!   `ρ ≈ 1`.
//! * [`limit_to_full_scale`]: a transparent look-ahead limiter on the faded stretch. A
//!   constant-power fade of two correlated signals reaches `√2` times their level
//!   (+3 dB) in its middle, which clips once converted to integers if they were near full
//!   scale. Where no faded sample exceeds the ceiling the limiter does nothing (the output
//!   is bit-identical); otherwise the gain is the box-average (radius [`LIMITER_RADIUS_S`],
//!   5 ms) of the sliding minimum (same radius) of the gain each sample needs, which is
//!   never more than any sample in reach needs (so no sample ends beyond the ceiling) and
//!   moves smoothly (a linear ramp over 10 ms, no distortion of its own). The ceiling is
//!   full scale, or the larger input peak if a generator already went beyond it: the fade
//!   never adds overshoot, and never hides a broken generator's.
//!
//! Why a limiter for `windows` mode rather than a correlation-aware fade there: the
//! windows are independent generations, uncorrelated in expectation, so constant power is
//! the right law and an estimate of `ρ` from one overlap of two random generations would
//! make the curve (and every output) depend on noise. Only the rare correlated overlap can
//! exceed full scale, and only it is touched. `continuation` mode uses both: the
//! correlation-aware curve because its sides are known to be the same sound, and the
//! limiter as the guarantee.

/// Radius of the limiter's look-ahead and smoothing, in seconds (the gain ramps over
/// twice this).
pub const LIMITER_RADIUS_S: f64 = 0.005;

/// Constant-power crossfade weights `(fade_out, fade_in)` for sample `i` of an overlap of
/// `n` samples: `(cos θ, sin θ)` with `θ = π/2 · (i + ½)/n`.
pub fn crossfade_weights(i: usize, n: usize) -> (f32, f32) {
    let theta = std::f64::consts::FRAC_PI_2 * (i as f64 + 0.5) / n as f64;
    (theta.cos() as f32, theta.sin() as f32)
}

/// Power-preserving crossfade weights `(fade_out, fade_in)` for two signals of correlation
/// `rho` (clamped to `[0, 1]`: anti-correlated signals get the constant-power curve, which
/// never amplifies). `rho = 0` is [`crossfade_weights`], `rho = 1` sums to 1.
pub fn crossfade_weights_correlated(i: usize, n: usize, rho: f64) -> (f32, f32) {
    let theta = std::f64::consts::FRAC_PI_2 * (i as f64 + 0.5) / n as f64;
    let r = if rho.is_finite() {
        rho.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let o = (theta.sin() - theta.cos()) / 2.0;
    let e = ((0.5 - (1.0 - r) * o * o) / (1.0 + r)).max(0.0).sqrt();
    ((e - o) as f32, (e + o) as f32)
}

/// Normalised correlation `Σab / √(Σa² · Σb²)` (0 when either side is silent).
pub fn correlation(a: &[f32], b: &[f32]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0.0f64, 0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (x as f64, y as f64);
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    let d = (aa * bb).sqrt();
    if d > 0.0 { ab / d } else { 0.0 }
}

/// Peak magnitude of a slice.
pub fn peak(x: &[f32]) -> f32 {
    x.iter().fold(0.0f32, |m, v| m.max(v.abs()))
}

/// Crossfade `prev` (fading out) into `next[..prev.len()]` (fading in) in place with
/// `weights(i, n)`, then limit the faded stretch to full scale (or the inputs' own peak).
/// Returns whether the limiter acted.
pub fn fade_into(
    next: &mut [f32],
    prev: &[f32],
    rate: u32,
    weights: impl Fn(usize, usize) -> (f32, f32),
) -> bool {
    let n = prev.len().min(next.len());
    if n == 0 {
        return false;
    }
    let ceiling = 1.0f32.max(peak(prev)).max(peak(&next[..n]));
    for (i, (a, &p)) in next[..n].iter_mut().zip(prev).enumerate() {
        let (w_out, w_in) = weights(i, n);
        *a = p * w_out + *a * w_in;
    }
    let radius = (LIMITER_RADIUS_S * rate as f64).round() as usize;
    limit_to_full_scale(&mut next[..n], ceiling, radius)
}

/// The look-ahead limiter (see the module documentation): scales `x` so that no sample
/// exceeds `ceiling` in magnitude, with a gain that is 1 wherever nothing within
/// `2 · radius` samples needs less. Samples outside `x` are taken to need no reduction.
/// Returns whether any gain below 1 was applied (`x` is untouched otherwise).
pub fn limit_to_full_scale(x: &mut [f32], ceiling: f32, radius: usize) -> bool {
    let n = x.len();
    let need = |i: usize| -> f64 {
        let a = x[i].abs();
        if a > ceiling {
            ceiling as f64 / a as f64
        } else {
            1.0
        }
    };
    let needs: Vec<f64> = (0..n).map(need).collect();
    if needs.iter().all(|&g| g >= 1.0) {
        return false;
    }
    let h = radius as isize;
    let at = |v: &[f64], j: isize| -> f64 {
        if j < 0 || j >= v.len() as isize {
            1.0
        } else {
            v[j as usize]
        }
    };
    // sliding minimum over [j − h, j + h], for j in [−h, n + h)
    let m: Vec<f64> = (-h..n as isize + h)
        .map(|j| (j - h..=j + h).map(|k| at(&needs, k)).fold(1.0, f64::min))
        .collect();
    // box average of m over [i − h, i + h]; m[j + h] holds the minimum around j
    let width = (2 * h + 1) as f64;
    for (i, v) in x.iter_mut().enumerate() {
        let i = i as isize;
        let g = (i - h..=i + h).map(|j| m[(j + h) as usize]).sum::<f64>() / width;
        let y = (*v as f64 * g) as f32;
        *v = y.clamp(-ceiling, ceiling);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_are_constant_power_and_symmetric() {
        for n in [1usize, 2, 3, 16, 100, 16000, 44100] {
            for i in 0..n {
                let (a, b) = crossfade_weights(i, n);
                assert!(((a * a + b * b) - 1.0).abs() < 1e-6, "n={n} i={i}");
                assert!((0.0..=1.0).contains(&a) && (0.0..=1.0).contains(&b));
                let (a2, b2) = crossfade_weights(n - 1 - i, n);
                assert!((a - b2).abs() < 1e-6 && (b - a2).abs() < 1e-6);
            }
            // Monotonic: fade-in rises (f32 saturates near 1 for long overlaps).
            let ins: Vec<f32> = (0..n).map(|i| crossfade_weights(i, n).1).collect();
            assert!(ins.windows(2).all(|p| p[0] <= p[1]));
            assert!(n < 2 || ins[0] < ins[n - 1]);
        }
    }

    #[test]
    fn correlated_weights_preserve_power_for_their_correlation() {
        for &rho in &[0.0, 0.3, 0.7, 1.0] {
            for n in [4usize, 64, 2048] {
                for i in 0..n {
                    let (o, e) = crossfade_weights_correlated(i, n, rho);
                    // power of w_out·a + w_in·b for unit-power a, b of correlation ρ
                    let p = (o * o + e * e) as f64 + 2.0 * rho * (o * e) as f64;
                    assert!((p - 1.0).abs() < 1e-5, "rho {rho} n {n} i {i}: {p}");
                    let (o2, e2) = crossfade_weights_correlated(n - 1 - i, n, rho);
                    assert!((o - e2).abs() < 1e-6 && (e - o2).abs() < 1e-6);
                }
            }
        }
        // ρ = 0 is the constant-power curve, ρ = 1 sums to one, ρ < 0 is clamped.
        for i in 0..32 {
            let (a, b) = crossfade_weights(i, 32);
            let (c, d) = crossfade_weights_correlated(i, 32, 0.0);
            assert!((a - c).abs() < 1e-6 && (b - d).abs() < 1e-6);
            let (c, d) = crossfade_weights_correlated(i, 32, -0.8);
            assert!((a - c).abs() < 1e-6 && (b - d).abs() < 1e-6);
            let (c, d) = crossfade_weights_correlated(i, 32, 1.0);
            assert!((c + d - 1.0).abs() < 1e-6);
        }
    }

    #[test]
    fn correlation_of_known_signals() {
        let a: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.1).sin()).collect();
        let neg: Vec<f32> = a.iter().map(|x| -2.0 * x).collect();
        let ortho: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.1).cos()).collect();
        assert!((correlation(&a, &a) - 1.0).abs() < 1e-12);
        assert!((correlation(&a, &neg) + 1.0).abs() < 1e-12);
        assert!(correlation(&a, &ortho).abs() < 0.02);
        assert_eq!(correlation(&a, &[0.0; 1000]), 0.0);
    }

    /// Two identical windows at 0.9 of full scale: the constant-power fade reaches
    /// 0.9·√2 = 1.27 (+2.1 dBFS) in its middle; after the limiter nothing exceeds 1, the
    /// gain moves by less than one 5 ms ramp allows per sample, and the stretch away from
    /// the peak is untouched.
    #[test]
    fn correlated_windows_no_longer_exceed_full_scale() {
        let rate = 16000;
        let n = 16000;
        let tone = |i: usize| 0.9 * (2.0 * std::f32::consts::PI * 440.0 * i as f32 / 16000.0).sin();
        let prev: Vec<f32> = (0..n).map(tone).collect();
        let mut plain = prev.clone();
        for (i, a) in plain.iter_mut().enumerate() {
            let (o, e) = crossfade_weights(i, n);
            *a = prev[i] * o + *a * e;
        }
        assert!(peak(&plain) > 1.25, "the bug: {}", peak(&plain));
        let mut next = prev.clone();
        assert!(fade_into(&mut next, &prev, rate, crossfade_weights));
        assert!(peak(&next) <= 1.0, "{}", peak(&next));
        // where nothing within reach of the limiter exceeded full scale, nothing changed
        let h = 80;
        let mut untouched = 0;
        for i in 0..n {
            let lo = i.saturating_sub(2 * h);
            let hi = (i + 2 * h + 1).min(n);
            if plain[lo..hi].iter().all(|v| v.abs() <= 1.0) {
                assert_eq!(next[i], plain[i], "sample {i}");
                untouched += 1;
            }
        }
        assert!(untouched > n / 10, "{untouched}");
        // the gain is smooth: |g(i+1) − g(i)| ≤ 1/(2h+1) where defined
        let gains: Vec<f64> = next
            .iter()
            .zip(&plain)
            .map(|(&y, &x)| {
                if x.abs() > 0.05 {
                    y as f64 / x as f64
                } else {
                    f64::NAN
                }
            })
            .collect();
        for w in gains.windows(2) {
            if w[0].is_finite() && w[1].is_finite() {
                assert!(
                    (w[1] - w[0]).abs() <= 1.0 / (2 * h + 1) as f64 + 1e-4,
                    "{w:?}"
                );
            }
        }
    }

    #[test]
    fn limiter_is_transparent_below_full_scale_and_respects_louder_inputs() {
        let mut x: Vec<f32> = (0..500).map(|i| 0.99 * ((i as f32) * 0.05).sin()).collect();
        let before = x.clone();
        assert!(!limit_to_full_scale(&mut x, 1.0, 10));
        assert_eq!(x, before);
        // a generator already at 2.0: a fade of 1.0 into 2.0 constant-power stays ≤ 2
        let prev = vec![0.5f32; 64];
        let mut next = vec![-2.0f32; 64];
        fade_into(&mut next, &prev, 16000, crossfade_weights);
        assert!(peak(&next) <= 2.0);
        // single spike: limited to the ceiling, neighbours ramp
        let mut y = vec![0.5f32; 101];
        y[50] = 4.0;
        assert!(limit_to_full_scale(&mut y, 1.0, 5));
        assert!(y[50] <= 1.0 && y[50] > 0.99);
        assert_eq!(y[0], 0.5);
        assert_eq!(y[100], 0.5);
        assert!(y.iter().all(|v| v.abs() <= 1.0));
    }
}
