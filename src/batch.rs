//! One sampler worker per device: the windows of every stream that runs on a device are
//! sampled by one thread, which puts the windows that are ready together into one network
//! batch ([`crate::sampler::sample_batch`]).
//!
//! A stream ([`crate::model::MmAudioStream`] made with a worker) prepares its window on its
//! own thread (frame picking, CLIP/Synchformer features through its own caches, text
//! features, noise, conditions: all batch 1, so streams prepare in parallel), queues the
//! sampling to its device's worker and waits, then decodes its latents on its own thread.
//!
//! **Grouping.** Items share a tensor batch only when their shapes and schedules agree: the
//! same model, latent length, CLIP and Synchformer lengths, number of known latents
//! (continuation windows), step count and CFG strength ([`GroupKey`]). Prompt, negative
//! prompt, seed, noise, features and cancellation are per item. Queued items with different
//! keys run as separate batches, one after the other, oldest group first.
//!
//! **Gathering.** When the first item of a round is queued while other streams of the same
//! worker are still preparing a window, the worker waits for them (at most
//! [`BatchOptions::gather`]) so that streams that run in step share a batch; a stream alone
//! never waits.
//!
//! **Cancellation.** Each item carries its stream's [`Cancel`]: a cancelled item is left out
//! of its batch at the next sampler step (it gets `Err(Aborted)`), the others go on
//! unchanged. A stream whose item is queued returns as soon as its cancellation fires.

use crate::error::{Error, Result};
use crate::model::MmAudio;
use crate::net::Conditions;
use crate::request::Cancel;
use crate::sampler::{BatchItem, EulerSampler, sample_batch};
use candle_core::Tensor;
use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How a worker forms batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchOptions {
    /// Items per network batch at most (each item is two rows with CFG).
    pub max_batch: usize,
    /// How long the first item of a round waits for streams still preparing theirs.
    pub gather: Duration,
}

impl Default for BatchOptions {
    fn default() -> Self {
        Self {
            max_batch: 8,
            gather: Duration::from_millis(100),
        }
    }
}

/// What must agree for two items to share a tensor batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GroupKey {
    /// The model (items of different models never batch).
    model: usize,
    latent: usize,
    clip: usize,
    sync: usize,
    known: usize,
    steps: usize,
    cfg_bits: u64,
}

/// Counters of a worker.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct BatchStats {
    /// Network batches run.
    pub batches: u64,
    /// Items sampled (cancelled ones included).
    pub items: u64,
    /// The largest batch.
    pub largest: usize,
    /// `sizes[k]`: batches of `k + 1` items.
    pub sizes: Vec<u64>,
}

struct Slot {
    result: Mutex<Option<Result<(Tensor, f64)>>>,
    ready: Condvar,
}

/// A window waiting for the sampler.
struct Pending {
    key: GroupKey,
    model: Arc<MmAudio>,
    x0: Tensor,
    known: Option<Tensor>,
    cond: Conditions,
    uncond: Conditions,
    steps: usize,
    cfg: f64,
    cancel: Cancel,
    slot: Arc<Slot>,
}

#[derive(Default)]
struct Queue {
    items: Vec<Pending>,
    /// Streams between the start of a window and its submission.
    preparing: usize,
    /// Test hook: the worker takes nothing while held.
    held: bool,
    quit: bool,
    stats: BatchStats,
}

struct Inner {
    queue: Mutex<Queue>,
    wake: Condvar,
    opts: BatchOptions,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The sampler worker of one device; the thread ends when the last handle is dropped.
pub struct DeviceWorker {
    device: String,
    inner: Arc<Inner>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for DeviceWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DeviceWorker({})", self.device)
    }
}

fn workers() -> &'static Mutex<HashMap<String, Weak<DeviceWorker>>> {
    static WORKERS: OnceLock<Mutex<HashMap<String, Weak<DeviceWorker>>>> = OnceLock::new();
    WORKERS.get_or_init(Default::default)
}

impl DeviceWorker {
    /// The process's worker for `device` (`cpu`, `cuda:0`, ...), started on first use.
    pub fn for_device(device: &str) -> Result<Arc<DeviceWorker>> {
        let mut map = lock(workers());
        if let Some(w) = map.get(device).and_then(Weak::upgrade) {
            return Ok(w);
        }
        let w = Arc::new(Self::start(device, BatchOptions::default())?);
        map.retain(|_, w| w.strong_count() > 0);
        map.insert(device.to_string(), Arc::downgrade(&w));
        Ok(w)
    }

    /// A worker of its own (not the process's for its device): tests and benchmarks.
    pub fn start(device: &str, opts: BatchOptions) -> Result<DeviceWorker> {
        let inner = Arc::new(Inner {
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            opts: BatchOptions {
                max_batch: opts.max_batch.max(1),
                ..opts
            },
        });
        let run = inner.clone();
        let thread = std::thread::Builder::new()
            .name(format!("mmaudio-batch-{device}"))
            .spawn(move || run.run())?;
        Ok(DeviceWorker {
            device: device.to_string(),
            inner,
            thread: Mutex::new(Some(thread)),
        })
    }

    pub fn device(&self) -> &str {
        &self.device
    }

    pub fn stats(&self) -> BatchStats {
        lock(&self.inner.queue).stats.clone()
    }

    /// Hold the worker (it takes no item until [`release`](Self::release)): lets a test put
    /// several items in one batch deterministically.
    #[doc(hidden)]
    pub fn hold(&self) {
        lock(&self.inner.queue).held = true;
    }
    #[doc(hidden)]
    pub fn release(&self) {
        lock(&self.inner.queue).held = false;
        self.inner.wake.notify_all();
    }
    /// Items queued and not yet taken.
    pub fn queued(&self) -> usize {
        lock(&self.inner.queue).items.len()
    }

    /// A stream starts preparing a window: the worker may wait for it (see the module
    /// documentation). The guard ends the preparation.
    pub fn preparing(&self) -> PrepareGuard<'_> {
        lock(&self.inner.queue).preparing += 1;
        PrepareGuard {
            worker: self,
            done: false,
        }
    }

    /// Sample one prepared window through the worker; waits for its batch. Returns the
    /// final state `(1, N, C)` (normalised, f32) and the seconds its batch took.
    #[allow(clippy::too_many_arguments)]
    pub fn sample(
        &self,
        guard: PrepareGuard<'_>,
        model: &Arc<MmAudio>,
        x0: Tensor,
        known: Option<Tensor>,
        cond: Conditions,
        uncond: Conditions,
        sampler: &EulerSampler,
        cancel: &Cancel,
    ) -> Result<(Tensor, f64)> {
        let item = WindowItem {
            x0,
            known,
            cond,
            uncond,
            steps: sampler.num_steps,
            cfg: sampler.cfg_strength,
        };
        self.sample_many(guard, model, vec![item], cancel)
            .pop()
            .expect("one result per item")
    }

    /// Queue several windows of one stream at once (`mmaudio generate --batch-windows`):
    /// those that agree on their shapes and schedule share a batch (with other streams'
    /// too). One result per item, in order.
    pub fn sample_many(
        &self,
        guard: PrepareGuard<'_>,
        model: &Arc<MmAudio>,
        items: Vec<WindowItem>,
        cancel: &Cancel,
    ) -> Vec<Result<(Tensor, f64)>> {
        let mut slots = Vec::with_capacity(items.len());
        let mut pending = Vec::with_capacity(items.len());
        for it in items {
            let key = (|| -> Result<GroupKey> {
                Ok(GroupKey {
                    model: Arc::as_ptr(model) as usize,
                    latent: it.x0.dim(1)?,
                    clip: it.cond.clip_f.dim(1)?,
                    sync: it.cond.sync_u.dim(1)?,
                    known: it.known.as_ref().map_or(Ok(0), |k| k.dim(1))?,
                    steps: it.steps,
                    cfg_bits: it.cfg.to_bits(),
                })
            })();
            let slot = Arc::new(Slot {
                result: Mutex::new(None),
                ready: Condvar::new(),
            });
            match key {
                Ok(key) => pending.push(Pending {
                    key,
                    model: model.clone(),
                    x0: it.x0,
                    known: it.known,
                    cond: it.cond,
                    uncond: it.uncond,
                    steps: it.steps,
                    cfg: it.cfg,
                    cancel: cancel.clone(),
                    slot: slot.clone(),
                }),
                Err(e) => *lock(&slot.result) = Some(Err(e)),
            }
            slots.push(slot);
        }
        {
            let mut q = lock(&self.inner.queue);
            q.items.extend(pending);
            guard.finish(&mut q);
        }
        self.inner.wake.notify_all();
        slots
            .iter()
            .map(|slot| {
                let mut result = lock(&slot.result);
                loop {
                    if let Some(r) = result.take() {
                        return r;
                    }
                    if cancel.is_cancelled() {
                        // the worker drops the item at its next step (or when it takes it)
                        return Err(Error::Aborted);
                    }
                    result = slot
                        .ready
                        .wait_timeout(result, Duration::from_millis(20))
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
            })
            .collect()
    }
}

/// One window for the sampler: its noise, known latents, batch-1 conditions and schedule.
pub struct WindowItem {
    pub x0: Tensor,
    pub known: Option<Tensor>,
    pub cond: Conditions,
    pub uncond: Conditions,
    pub steps: usize,
    pub cfg: f64,
}

impl Drop for DeviceWorker {
    fn drop(&mut self) {
        lock(&self.inner.queue).quit = true;
        self.inner.wake.notify_all();
        if let Some(t) = lock(&self.thread).take() {
            let _ = t.join();
        }
    }
}

/// A stream's window between its start and its submission ([`DeviceWorker::preparing`]).
pub struct PrepareGuard<'a> {
    worker: &'a DeviceWorker,
    done: bool,
}

impl PrepareGuard<'_> {
    fn finish(mut self, q: &mut Queue) {
        q.preparing -= 1;
        self.done = true;
    }
}

impl Drop for PrepareGuard<'_> {
    fn drop(&mut self) {
        if !self.done {
            lock(&self.worker.inner.queue).preparing -= 1;
            self.worker.inner.wake.notify_all();
        }
    }
}

impl Inner {
    fn run(&self) {
        loop {
            let batch = {
                let mut q = lock(&self.queue);
                loop {
                    if q.quit {
                        // nobody holds a handle: nobody waits for the items either
                        return;
                    }
                    if !q.held && !q.items.is_empty() {
                        break;
                    }
                    q = self.wake.wait(q).unwrap_or_else(PoisonError::into_inner);
                }
                // streams still preparing may join this round
                let until = Instant::now() + self.opts.gather;
                while q.preparing > 0 && q.items.len() < self.opts.max_batch && !q.quit {
                    let now = Instant::now();
                    if now >= until {
                        break;
                    }
                    q = self
                        .wake
                        .wait_timeout(q, until - now)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
                // the oldest item's group, up to max_batch items
                let key = q.items[0].key;
                let mut batch = Vec::new();
                let mut rest = Vec::new();
                for p in q.items.drain(..) {
                    if p.key == key && batch.len() < self.opts.max_batch {
                        batch.push(p);
                    } else {
                        rest.push(p);
                    }
                }
                q.items = rest;
                let n = batch.len();
                q.stats.batches += 1;
                q.stats.items += n as u64;
                q.stats.largest = q.stats.largest.max(n);
                if q.stats.sizes.len() < n {
                    q.stats.sizes.resize(n, 0);
                }
                q.stats.sizes[n - 1] += 1;
                batch
            };
            self.sample(batch);
        }
    }

    fn sample(&self, batch: Vec<Pending>) {
        let started = Instant::now();
        let model = batch[0].model.clone();
        let sampler = EulerSampler::new(batch[0].steps, batch[0].cfg);
        let results = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let items: Vec<BatchItem> = batch
                .iter()
                .map(|p| BatchItem {
                    x0: &p.x0,
                    known: p.known.as_ref(),
                    cond: &p.cond,
                    uncond: &p.uncond,
                    cancel: &p.cancel,
                })
                .collect();
            let out = sample_batch(&model.net, &sampler, &items);
            model.device.synchronize().map(|_| out)
        }));
        let secs = started.elapsed().as_secs_f64();
        let mut results: Vec<Result<(Tensor, f64)>> = match results {
            Ok(Ok(v)) => v.into_iter().map(|r| r.map(|x| (x, secs))).collect(),
            Ok(Err(e)) => batch
                .iter()
                .map(|_| Err(Error::Candle(candle_core::Error::Msg(e.to_string()))))
                .collect(),
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                batch
                    .iter()
                    .map(|_| {
                        Err(Error::Candle(candle_core::Error::Msg(format!(
                            "the sampler panicked: {msg}"
                        ))))
                    })
                    .collect()
            }
        };
        for (p, r) in batch.iter().zip(results.drain(..)) {
            *lock(&p.slot.result) = Some(r);
            p.slot.ready.notify_all();
        }
    }
}
