//! Branch-free float32 `exp` and `erf` and the activations built on them, written so that a
//! loop calling them vectorises (no library calls, selects instead of branches).
//!
//! * `exp`: Cody–Waite reduction by ln 2 and the Cephes degree-5 polynomial (≤ 2 ulp on
//!   the normal range), 0 below −87.3 (so −∞ gives 0), +∞ above 88.7, NaN stays NaN.
//! * `erf`: Abramowitz & Stegun 7.1.26 (|error| < 1.5·10⁻⁷, the formula PyTorch's own
//!   vectorised CPU `erf`, and so its `GELU`, uses) where |x| ≥ 0.5, a Taylor series below.

/// Below this `exp` returns 0 (the result would be subnormal).
const EXP_LO: f32 = -87.336_54;
/// Above this `exp` overflows.
const EXP_HI: f32 = 88.722_83;

/// `e^x`.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5·2^23: adding it rounds to an integer held in the low mantissa bits
    const MAGIC: f32 = 12_582_912.0;
    let xc = x.clamp(EXP_LO, EXP_HI);
    let kf = xc * LOG2E + MAGIC;
    let k = kf.to_bits() as i32 - MAGIC.to_bits() as i32;
    let kr = kf - MAGIC;
    let r = (xc - kr * LN2_HI) - kr * LN2_LO;
    let p = 1.987_569_1e-4_f32;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 5e-1;
    let y = p * (r * r) + r + 1.0;
    // 2^k as float bits; k ∈ [−126, 128]: split so that both factors are normal
    let k1 = k >> 1;
    let s1 = f32::from_bits(((k1 + 127) as u32) << 23);
    let s2 = f32::from_bits(((k - k1 + 127) as u32) << 23);
    let v = y * s1 * s2;
    let v = if x < EXP_LO { 0.0 } else { v };
    let v = if x > EXP_HI { f32::INFINITY } else { v };
    if x.is_nan() { x } else { v }
}

/// `erf(x)`: A&S 7.1.26 for |x| ≥ 0.5, and below, where its `1 − …` form cancels, the
/// Taylor series `2/√π · Σ (−1)ⁿ x²ⁿ⁺¹ / (n! (2n+1))` to n = 6 (truncation < 10⁻⁹).
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A1: f32 = 0.254_829_6;
    const A2: f32 = -0.284_496_74;
    const A3: f32 = 1.421_413_7;
    const A4: f32 = -1.453_152_1;
    const A5: f32 = 1.061_405_4;
    const T: [f32; 7] = [
        std::f32::consts::FRAC_2_SQRT_PI,
        -0.376_126_4,
        0.112_837_92,
        -0.026_866_171,
        0.005_223_977_6,
        -8.548_327e-4,
        1.205_533_3e-4,
    ];
    let ax = x.abs();
    let z = ax * ax;
    let series =
        ax * (T[0] + z * (T[1] + z * (T[2] + z * (T[3] + z * (T[4] + z * (T[5] + z * T[6]))))));
    let t = 1.0 / (1.0 + P * ax);
    let poly = ((((A5 * t + A4) * t + A3) * t + A2) * t + A1) * t;
    let tail = 1.0 - poly * exp(-z);
    let y = if ax < 0.5 { series } else { tail };
    y.copysign(x)
}

/// `x · sigmoid(x)` (SiLU).
#[inline(always)]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + exp(-x))
}

/// `x · sigmoid(1.702 x)` (OpenAI CLIP's QuickGELU).
#[inline(always)]
pub fn quick_gelu(x: f32) -> f32 {
    x / (1.0 + exp(-1.702 * x))
}

/// Exact GELU `x · Φ(x) = ½ x (1 + erf(x/√2))`.
#[inline(always)]
pub fn gelu_erf(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference erf in f64 (candle's port of Boost's).
    fn erf64(x: f64) -> f64 {
        candle_core::cpu::erf::erf_f64(x)
    }

    #[test]
    fn exp_relative_error_and_limits() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let want = (x as f64).exp();
            let got = exp(x) as f64;
            worst = worst.max(((got - want) / want).abs());
            x += 0.0137;
        }
        assert!(worst < 3e-7, "max relative error {worst}");
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(-1000.0), 0.0);
        assert_eq!(exp(f32::INFINITY), f32::INFINITY);
        assert_eq!(exp(1000.0), f32::INFINITY);
        assert!(exp(f32::NAN).is_nan());
    }

    #[test]
    fn erf_and_activations_match_references() {
        let mut worst = 0f64;
        let mut x = -8.0f32;
        while x < 8.0 {
            worst = worst.max((erf(x) as f64 - erf64(x as f64)).abs());
            x += 0.00731;
        }
        assert!(worst < 3e-7, "erf max abs error {worst}");
        // no cancellation near 0: relative accuracy
        for &x in &[1e-6f32, 1e-3, 0.1, 0.49] {
            let rel = (erf(x) as f64 / erf64(x as f64) - 1.0).abs();
            assert!(rel < 3e-7, "erf({x}) relative error {rel}");
        }
        for &x in &[-20.0f32, -3.0, -0.5, 0.0, 0.25, 2.0, 30.0] {
            let xd = x as f64;
            let sig = |v: f64| 1.0 / (1.0 + (-v).exp());
            assert!((silu(x) as f64 - xd * sig(xd)).abs() < 1e-6 * (1.0 + xd.abs()));
            assert!((quick_gelu(x) as f64 - xd * sig(1.702 * xd)).abs() < 1e-6 * (1.0 + xd.abs()));
            let g = 0.5 * xd * (1.0 + erf64(xd / 2f64.sqrt()));
            assert!((gelu_erf(x) as f64 - g).abs() < 1e-6 * (1.0 + xd.abs()));
        }
        assert_eq!(silu(-1000.0), -0.0);
        assert_eq!(quick_gelu(1000.0), 1000.0);
    }
}
