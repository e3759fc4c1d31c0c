//! The window engine's crossfade against values written down from its documented formula
//! (`(cos θ, sin θ)`, θ = π/2 · (i + ½)/n), not computed by the code under test: a curve that
//! is still constant-power and symmetric but not the documented one must fail here.
//! Only the public API (`crossfade_weights`, `Assembler`, `WindowSpan`) is used.

// The expected values are written down digit by digit on purpose (not `FRAC_1_SQRT_2`).
#![allow(clippy::approx_constant, clippy::excessive_precision)]

use mmaudio::window::{Assembler, WindowConfig, WindowSpan, crossfade_weights};

/// cos(π/2 · (i + ½)/n) for n = 1, 2, 4, 5 (i = 0…n−1), to 8 digits.
const FADE_OUT: &[(usize, &[f32])] = &[
    (1, &[0.707_106_78]),
    (2, &[0.923_879_53, 0.382_683_43]),
    (4, &[0.980_785_28, 0.831_469_61, 0.555_570_23, 0.195_090_32]),
    (
        5,
        &[
            0.987_688_34,
            0.891_006_52,
            0.707_106_78,
            0.453_990_50,
            0.156_434_47,
        ],
    ),
];

#[test]
fn crossfade_weights_are_the_documented_curve() {
    for &(n, out) in FADE_OUT {
        for i in 0..n {
            let (w_out, w_in) = crossfade_weights(i, n);
            assert!(
                (w_out - out[i]).abs() < 1e-6,
                "fade-out {i}/{n}: {w_out} != {}",
                out[i]
            );
            // the fade-in is the fade-out mirrored: sin θ_i = cos θ_{n−1−i}
            assert!(
                (w_in - out[n - 1 - i]).abs() < 1e-6,
                "fade-in {i}/{n}: {w_in} != {}",
                out[n - 1 - i]
            );
        }
    }
}

fn span(index: u64, start: u64, len: u64, last: bool) -> WindowSpan {
    WindowSpan {
        index,
        origin: 0,
        start,
        len,
        generated: len,
        last,
    }
}

/// Two windows of 8 samples overlapping by 4: the overlap is `prev · cos θ + next · sin θ`.
#[test]
fn assembler_crossfades_with_the_documented_curve() {
    let cfg = WindowConfig::from_samples(16_000, 8, 4, 1).unwrap();
    let out4 = FADE_OUT.iter().find(|(n, _)| *n == 4).unwrap().1;
    for (prev, next) in [(1.0f32, 0.0f32), (0.0, 1.0), (0.5, -2.0)] {
        let mut a = Assembler::new(cfg);
        let c0 = a.push(&span(0, 0, 8, false), vec![prev; 8]).unwrap();
        assert_eq!(c0.samples, vec![prev; 4], "first hop passes unchanged");
        let c1 = a.push(&span(1, 4, 8, true), vec![next; 8]).unwrap();
        assert_eq!(c1.offset, 4);
        assert_eq!(c1.samples.len(), 8);
        for i in 0..4 {
            let want = prev * out4[i] + next * out4[3 - i];
            assert!(
                (c1.samples[i] - want).abs() < 1e-6,
                "prev {prev} next {next} sample {i}: {} != {want}",
                c1.samples[i]
            );
        }
        assert_eq!(
            &c1.samples[4..],
            &[next; 4],
            "after the overlap: the new window"
        );
        assert!(a.finish(12).unwrap().samples.is_empty());
    }
}
