//! Device and precision selection: `auto | cpu | cuda:N` and `auto | f32 | f16 | bf16`.

use crate::error::{Error, Result};
use candle_core::{DType, Device};

/// Parse a device spec. `auto` picks CUDA device 0 when this build has CUDA and a GPU is
/// present, else the CPU. `cuda:N` on a build without the `cuda` feature is an error that
/// says so.
pub fn select_device(spec: &str) -> Result<Device> {
    let s = spec.trim().to_ascii_lowercase();
    match s.as_str() {
        "cpu" => Ok(Device::Cpu),
        "auto" | "" => {
            if candle_core::utils::cuda_is_available()
                && let Ok(d) = Device::new_cuda(0)
            {
                return Ok(d);
            }
            Ok(Device::Cpu)
        }
        _ => {
            let idx = match s.strip_prefix("cuda") {
                Some("") => 0,
                Some(rest) => rest.trim_start_matches(':').parse::<usize>().map_err(|_| {
                    Error::config(format!("invalid device `{spec}` (use auto, cpu or cuda:N)"))
                })?,
                None => {
                    return Err(Error::config(format!(
                        "invalid device `{spec}` (use auto, cpu or cuda:N)"
                    )));
                }
            };
            if !candle_core::utils::cuda_is_available() {
                return Err(Error::config(format!(
                    "device `{spec}` requested but this build has no CUDA support (rebuild with --features cuda)"
                )));
            }
            Device::new_cuda(idx)
                .map_err(|e| Error::config(format!("cannot open CUDA device {idx}: {e}")))
        }
    }
}

/// The name of a device chosen by [`select_device`] from `spec`, for messages: `cpu`,
/// `cuda:N` (`auto` on a CUDA machine is `cuda:0`).
pub fn device_name(spec: &str, device: &Device) -> String {
    match device {
        Device::Cpu => "cpu".into(),
        Device::Cuda(_) => {
            let s = spec.trim().to_ascii_lowercase();
            match s.strip_prefix("cuda").map(|r| r.trim_start_matches(':')) {
                Some(n) if !n.is_empty() => format!("cuda:{n}"),
                _ => "cuda:0".into(),
            }
        }
        Device::Metal(_) => "metal".into(),
    }
}

/// Parse a precision; `auto` is bf16 on CUDA (as the official demo) and f32 on the CPU.
pub fn select_dtype(precision: &str, device: &Device) -> Result<DType> {
    match precision.trim().to_ascii_lowercase().as_str() {
        "auto" | "" => Ok(if device.is_cuda() {
            DType::BF16
        } else {
            DType::F32
        }),
        other => crate::weights::parse_dtype(other),
    }
}

static FAST_CPU: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Use the fast CPU float32 kernels where they apply (the default), or run every model
/// through its generic candle-op path — the code a CUDA device runs, op for op — on the CPU
/// as well. Process-wide; read when models are built (weights are laid out for the chosen
/// path) and when layers run: set it before loading. `mmaudio parity --generic-kernels`,
/// `mmaudio bench … --generic-kernels` and the tests use it to check on a CPU what a GPU
/// computes.
pub fn set_fast_cpu_kernels(on: bool) {
    FAST_CPU.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// See [`set_fast_cpu_kernels`].
pub fn fast_cpu_kernels() -> bool {
    FAST_CPU.load(std::sync::atomic::Ordering::Relaxed)
}

/// Keep large freed buffers in the process heap instead of returning them to the kernel.
///
/// The audio decoders allocate tens of large (≥ 32 MB at 44.1 kHz) activation buffers per
/// stage. glibc serves allocations above its mmap threshold (at most 32 MB by default) with
/// fresh `mmap`s, so every such buffer costs thousands of page faults when first written —
/// about a quarter of the 44.1 kHz vocoder's time. This raises the mmap and trim thresholds
/// to 1 GiB (`mallopt`, glibc only; a no-op elsewhere), so freed buffers are reused: the
/// process keeps its peak heap instead of returning it. It is process-wide: call it once at
/// program start (the `mmaudio` CLI does; the generator does when it loads a model, so the GStreamer element opts its process in). Returns whether it applied.
pub fn tune_allocator() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        unsafe extern "C" {
            fn mallopt(param: i32, value: i32) -> i32;
        }
        const M_TRIM_THRESHOLD: i32 = -1;
        const M_MMAP_THRESHOLD: i32 = -3;
        // SAFETY: mallopt only changes allocator parameters.
        unsafe {
            mallopt(M_MMAP_THRESHOLD, 1 << 30) == 1 && mallopt(M_TRIM_THRESHOLD, 1 << 30) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_specs() {
        assert!(matches!(select_device("cpu").unwrap(), Device::Cpu));
        assert!(select_device("gpu").is_err());
        assert_eq!(select_dtype("auto", &Device::Cpu).unwrap(), DType::F32);
        assert_eq!(select_dtype("bf16", &Device::Cpu).unwrap(), DType::BF16);
        assert!(
            select_dtype("int8", &Device::Cpu)
                .unwrap_err()
                .to_string()
                .contains("int8")
        );
        if !candle_core::utils::cuda_is_available() {
            let e = select_device("cuda:0").unwrap_err().to_string();
            assert!(e.contains("no CUDA support"), "{e}");
            assert!(matches!(select_device("auto").unwrap(), Device::Cpu));
        }
    }
}
