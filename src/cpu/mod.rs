//! CPU float32 kernels with runtime instruction-set dispatch.
//!
//! One binary serves every x86-64 host: each kernel is compiled three times — for AVX-512
//! (F, BW, DQ, VL with FMA), for AVX2 with FMA, and for the baseline — and the widest one the
//! host supports runs. The host is probed once ([`isa`]); `MMAUDIO_CPU_ISA=avx2|generic`
//! lowers the choice for A/B runs (it can never raise it). Matrix products go through the
//! `gemm` crate, built with its `x86-v4` feature, which makes the same choice on its own
//! (AVX-512 F when the host has it, else AVX2/FMA); [`describe`] says what ran.
//!
//! The kernels are written as plain loops over `f32` slices with fixed-width partial sums,
//! so the compiler vectorises them at whatever width the enabled features give; the few
//! transcendental functions they need ([`math`]) are branch-free polynomials for the same
//! reason. Every kernel is tested against a reference at each ISA the host supports.
//!
//! * [`math`]: `exp`, `erf`, sigmoid-based activations, vectorisable;
//! * [`rows`]: row-wise LayerNorm (affine, or modulated as adaLN), softmax, activations;
//! * [`gemm`]: matrix products on slices with strides, bias and residual folded into the
//!   accumulator, optional fused activation;
//! * [`attention`]: softmax attention straight from projection outputs (heads addressed by
//!   strides, several key/value segments, causal), scores only for a block of queries at a
//!   time.

pub mod attention;
pub mod gemm;
pub mod math;
pub mod rows;
pub mod tensor;

use std::sync::OnceLock;

/// Instruction-set level of the CPU kernels. Values above `generic` are only produced by
/// probing the host ([`isa`], [`Isa::supported`]), so a kernel never runs code the CPU
/// lacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Isa(Level);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Level {
    Generic,
    Avx2,
    Avx512,
}

impl Isa {
    /// The baseline (no dispatch): always available.
    pub const GENERIC: Isa = Isa(Level::Generic);

    /// Every level this host supports, lowest first (tests run each).
    pub fn supported() -> Vec<Isa> {
        let top = detected();
        [Level::Generic, Level::Avx2, Level::Avx512]
            .into_iter()
            .filter(|l| *l <= top.0)
            .map(Isa)
            .collect()
    }

    pub fn name(self) -> &'static str {
        match self.0 {
            Level::Generic => "generic",
            Level::Avx2 => "avx2",
            Level::Avx512 => "avx512",
        }
    }

    pub fn is_avx512(self) -> bool {
        self.0 == Level::Avx512
    }
}

/// The widest level this host supports.
fn detected() -> Isa {
    static D: OnceLock<Isa> = OnceLock::new();
    *D.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 =
                std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma");
            let avx512 = avx2
                && std::is_x86_feature_detected!("avx512f")
                && std::is_x86_feature_detected!("avx512bw")
                && std::is_x86_feature_detected!("avx512dq")
                && std::is_x86_feature_detected!("avx512vl");
            if avx512 {
                return Isa(Level::Avx512);
            }
            if avx2 {
                return Isa(Level::Avx2);
            }
        }
        Isa::GENERIC
    })
}

/// The level the kernels run at: the host's widest, lowered by `MMAUDIO_CPU_ISA`
/// (`avx2` or `generic`) when set.
pub fn isa() -> Isa {
    static I: OnceLock<Isa> = OnceLock::new();
    *I.get_or_init(|| {
        let top = detected();
        let want = match std::env::var("MMAUDIO_CPU_ISA")
            .unwrap_or_default()
            .to_ascii_lowercase()
            .as_str()
        {
            "generic" | "scalar" => Isa(Level::Generic),
            "avx2" => Isa(Level::Avx2),
            _ => top,
        };
        want.min(top)
    })
}

/// What the `gemm` crate dispatches to on this host (it probes on its own).
pub fn gemm_isa() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") {
            return "avx512f";
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            return "avx2+fma";
        }
        if std::is_x86_feature_detected!("avx") {
            return "avx";
        }
    }
    "baseline"
}

/// One line for reports: CPU model, kernel level and GEMM level, e.g.
/// `AMD EPYC 9B45 | kernels avx512 | gemm avx512f`.
pub fn describe() -> String {
    format!(
        "{} | kernels {} | gemm {}",
        cpu_model(),
        isa().name(),
        gemm_isa()
    )
}

/// `model name` of the first CPU in `/proc/cpuinfo` (or "unknown").
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// Define `fn NAME(isa: Isa, args…) -> R` running `body` compiled for the given level:
/// the body is an `#[inline(always)]` function instantiated inside one
/// `#[target_feature]` wrapper per level, so the compiler vectorises it for each.
/// Everything the body calls must be `#[inline(always)]` too to benefit.
macro_rules! multiversion {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$m])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name(isa: $crate::cpu::Isa, $($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn imp($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c")]
                #[allow(clippy::too_many_arguments)]
                fn v4($($arg: $ty),*) $(-> $ret)? { imp($($arg),*) }
                #[target_feature(enable = "avx2,fma,f16c")]
                #[allow(clippy::too_many_arguments)]
                fn v3($($arg: $ty),*) $(-> $ret)? { imp($($arg),*) }
                if isa.is_avx512() {
                    // SAFETY: an AVX-512 `Isa` only exists when the host has these features
                    return unsafe { v4($($arg),*) };
                }
                if isa > $crate::cpu::Isa::GENERIC {
                    // SAFETY: an AVX2 `Isa` only exists when the host has AVX2 and FMA
                    return unsafe { v3($($arg),*) };
                }
            }
            let _ = isa;
            imp($($arg),*)
        }
    };
}
pub(crate) use multiversion;

/// A raw pointer that parallel tasks use to write disjoint parts of one buffer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SendPtr(pub *mut f32);
// SAFETY: only used to write regions that no other task touches (stated at each use)
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_ordered_and_detected_is_supported() {
        let s = Isa::supported();
        assert_eq!(s[0], Isa::GENERIC);
        assert!(s.windows(2).all(|w| w[0] < w[1]));
        assert!(s.contains(&isa()));
        assert!(describe().contains(isa().name()));
    }
}
