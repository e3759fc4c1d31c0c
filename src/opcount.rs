//! Counting the tensor operations a piece of code issues: on a GPU each is (at least) one
//! kernel launch or transfer, so the count per sampler step is the launch overhead the
//! generic path pays (`mmaudio bench net --count-ops`).
//!
//! candle has no hook per operation, but it creates every result that holds new data —
//! an op's output, a copy, an upload, a fill — through one constructor that wraps the new
//! storage in its own `Arc<RwLock<Storage>>`, right before the `Arc<Tensor_>` of the tensor
//! itself; views (narrow, transpose, broadcast, reshape of contiguous data) share their
//! parent's storage and create only the second. [`CountingAlloc`] (a thin wrapper around
//! the system allocator; the `mmaudio` binary installs it as its global allocator) watches
//! the allocations of the thread inside [`count`] for that pair: an allocation of the
//! storage cell's size followed, within three allocations (the new tensor's shape and
//! strides), by one of the tensor's size. Both sizes are measured at the start of every
//! [`count`] on a known operation sequence (a fill, a view, a copy), so a change of
//! candle's internals makes counting fail loudly instead of counting wrong.
//!
//! In-place writes (`slice_set`) make no storage: the code that issues them reports them
//! with [`note_in_place`]. What is counted is candle operations, not CUDA launches exactly:
//! a `cat` of n pieces is one operation here and n copies on CUDA. Outside [`count`] the
//! allocator costs one thread-local read per allocation.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicBool, Ordering};

/// The system allocator, observed inside [`count`]. Install it with
/// `#[global_allocator] static A: mmaudio::opcount::CountingAlloc = mmaudio::opcount::CountingAlloc;`
pub struct CountingAlloc;

static INSTALLED: AtomicBool = AtomicBool::new(false);

const REC: usize = 64;

/// Per-thread state: off, recording sizes (calibration) or counting.
struct State {
    mode: Cell<u8>,
    rec: RefCell<[usize; REC]>,
    rec_len: Cell<usize>,
    storage_size: Cell<usize>,
    tensor_size: Cell<usize>,
    /// allocations left in which a tensor allocation completes a storage pair
    pending: Cell<u8>,
    ops: Cell<u64>,
}

const OFF: u8 = 0;
const RECORD: u8 = 1;
const COUNT: u8 = 2;

thread_local! {
    static STATE: State = const {
        State {
            mode: Cell::new(OFF),
            rec: RefCell::new([0; REC]),
            rec_len: Cell::new(0),
            storage_size: Cell::new(0),
            tensor_size: Cell::new(0),
            pending: Cell::new(0),
            ops: Cell::new(0),
        }
    };
}

#[inline]
fn observe(size: usize) {
    if !INSTALLED.load(Ordering::Relaxed) {
        INSTALLED.store(true, Ordering::Relaxed);
    }
    let _ = STATE.try_with(|s| match s.mode.get() {
        OFF => {}
        RECORD => {
            let n = s.rec_len.get();
            if n < REC
                && let Ok(mut r) = s.rec.try_borrow_mut()
            {
                r[n] = size;
                s.rec_len.set(n + 1);
            }
        }
        _ => {
            if s.pending.get() > 0 {
                if size == s.tensor_size.get() {
                    s.ops.set(s.ops.get() + 1);
                    s.pending.set(0);
                    return;
                }
                s.pending.set(s.pending.get() - 1);
            }
            if size == s.storage_size.get() {
                s.pending.set(3);
            }
        }
    });
}

// SAFETY: every call is forwarded unchanged to the system allocator; `observe` only
// touches thread-local cells and never allocates.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        observe(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        observe(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        observe(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Whether [`CountingAlloc`] is this process's global allocator.
pub fn installed() -> bool {
    // any allocation through it sets the flag
    drop(std::hint::black_box(Box::new(0u64)));
    INSTALLED.load(Ordering::Relaxed)
}

/// Operations counted by [`count`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OpCount {
    /// New tensor storages (op outputs, copies, uploads, fills).
    pub ops: u64,
}

fn recorded(f: impl FnOnce()) -> Vec<usize> {
    STATE.with(|s| {
        s.rec_len.set(0);
        s.mode.set(RECORD);
    });
    f();
    STATE.with(|s| {
        s.mode.set(OFF);
        s.rec.borrow()[..s.rec_len.get()].to_vec()
    })
}

/// Measure the sizes of a storage cell and of a tensor on a known sequence.
fn calibrate() -> std::result::Result<(usize, usize), String> {
    use candle_core::{DType, Device, Tensor};
    let mut keep = Vec::with_capacity(4);
    let base = Tensor::zeros(5, DType::U8, &Device::Cpu).map_err(|e| e.to_string())?;
    let fill = recorded(|| keep.push(Tensor::zeros(7, DType::U8, &Device::Cpu)));
    let view = recorded(|| keep.push(base.narrow(0, 1, 3)));
    let copy = recorded(|| keep.push(base.copy()));
    drop(keep);
    let fail = |why: &str| {
        Err(format!(
            "op counting: calibration failed ({why}; fill {fill:?}, view {view:?}, copy {copy:?}): \
             candle's tensor construction changed"
        ))
    };
    let (Some(&tensor), Some(&tensor_v), Some(&tensor_c)) = (fill.last(), view.last(), copy.last())
    else {
        return fail("no allocations seen");
    };
    if tensor != tensor_v || tensor != tensor_c {
        return fail("tensor sizes differ");
    }
    // the storage cell: the largest allocation of the fill before its tensor, absent from the
    // view, present in the copy within three allocations of its tensor
    let Some(&storage) = fill[..fill.len() - 1].iter().max() else {
        return fail("no storage allocation");
    };
    if view.contains(&storage) {
        return fail("a view allocated a storage-sized block");
    }
    let n = copy.len();
    if !copy[n.saturating_sub(4)..n - 1].contains(&storage) {
        return fail("the copy made no storage-sized allocation before its tensor");
    }
    Ok((storage, tensor))
}

/// Count `n` operations that write into an existing tensor (`slice_set`): they make no new
/// storage, so the allocator cannot see them; code that issues them notes them here.
pub fn note_in_place(n: u64) {
    let _ = STATE.try_with(|s| {
        if s.mode.get() == COUNT {
            s.ops.set(s.ops.get() + n);
        }
    });
}

/// Run `f` and count the tensor operations it issues on this thread (see the module doc).
/// Fails when [`CountingAlloc`] is not the global allocator or candle's internals no longer
/// match what the counter expects.
pub fn count<R>(f: impl FnOnce() -> R) -> std::result::Result<(R, OpCount), String> {
    if !installed() {
        return Err(
            "op counting needs mmaudio::opcount::CountingAlloc as the global allocator".into(),
        );
    }
    let (storage, tensor) = calibrate()?;
    STATE.with(|s| {
        s.storage_size.set(storage);
        s.tensor_size.set(tensor);
        s.pending.set(0);
        s.ops.set(0);
        s.mode.set(COUNT);
    });
    let r = f();
    let ops = STATE.with(|s| {
        s.mode.set(OFF);
        s.ops.get()
    });
    Ok((r, OpCount { ops }))
}
