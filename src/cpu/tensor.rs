//! Borrowing the f32 data of CPU tensors for the kernels of this module.

use candle_core::{CpuStorage, DType, Storage, Tensor};
use std::ops::Deref;

/// The contiguous f32 data of a CPU tensor, borrowed (the tensor's storage stays
/// read-locked while this lives).
pub struct HostF32<'a> {
    guard: Box<dyn Deref<Target = Storage> + 'a>,
    start: usize,
    len: usize,
}

impl HostF32<'_> {
    pub fn as_slice(&self) -> &[f32] {
        match &**self.guard {
            Storage::Cpu(CpuStorage::F32(v)) => &v[self.start..self.start + self.len],
            _ => unreachable!("checked when borrowed"),
        }
    }
}

/// Borrow `t`'s data if it is a contiguous f32 CPU tensor and the fast CPU kernels are on
/// ([`crate::device::set_fast_cpu_kernels`]: off, every model runs its generic path, the
/// code a GPU runs).
pub fn host_f32(t: &Tensor) -> Option<HostF32<'_>> {
    if !crate::device::fast_cpu_kernels()
        || !t.device().is_cpu()
        || t.dtype() != DType::F32
        || !t.is_contiguous()
    {
        return None;
    }
    let (guard, layout) = t.storage_and_layout();
    if !matches!(&*guard, Storage::Cpu(CpuStorage::F32(_))) {
        return None;
    }
    let start = layout.start_offset();
    let len = t.elem_count();
    Some(HostF32 {
        guard: Box::new(guard),
        start,
        len,
    })
}

/// Whether every tensor is a contiguous f32 CPU tensor and the fast kernels are on (they
/// apply).
pub fn all_host_f32(ts: &[&Tensor]) -> bool {
    crate::device::fast_cpu_kernels()
        && ts
            .iter()
            .all(|t| t.device().is_cpu() && t.dtype() == DType::F32 && t.is_contiguous())
}
