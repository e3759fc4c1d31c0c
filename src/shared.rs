//! One model per process: every user that asks for the same model folder, variant, device and
//! precision gets the same loaded [`MmAudio`].
//!
//! The registry holds weak references: a model lives as long as one of its users holds it
//! (each stream's [`MmAudioStream`] holds an `Arc`), and is released when the last goes; a
//! later request loads it again. Loading happens once even when several users ask at the same
//! time: the first loads, the others wait for it and share the result (if that load fails,
//! the next waiter tries its own load and reports its own error).
//!
//! Options are compared after `auto` is resolved ([`Resolved`]): `variant=auto` and the
//! variant the folder holds, `device=auto` and the device it picks, are the same model. The
//! folder is compared by its canonical path.
//!
//! Each stream made here samples through its device's worker ([`crate::batch`]), so windows
//! of different streams on one device share network batches.

use crate::batch::DeviceWorker;
use crate::config::Variant;
use crate::error::Result;
use crate::generator::LoadOptions;
use crate::model::{MmAudio, MmAudioStream, Resolved, load_resolved};
use candle_core::DType;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError, Weak};

/// What identifies a loaded model in the process.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModelKey {
    pub dir: PathBuf,
    pub variant: Variant,
    pub device: String,
    pub dtype: String,
}

impl ModelKey {
    fn new(r: &Resolved) -> Self {
        Self {
            dir: std::fs::canonicalize(&r.dir.root).unwrap_or_else(|_| r.dir.root.clone()),
            variant: r.variant,
            device: r.device_name.clone(),
            dtype: dtype_name(r.dtype),
        }
    }
}

fn dtype_name(d: DType) -> String {
    format!("{d:?}").to_lowercase()
}

enum Entry {
    /// Someone is loading it; waiters sleep on the registry's condition variable.
    Loading,
    Ready(Weak<MmAudio>),
}

struct Registry {
    models: Mutex<HashMap<ModelKey, Entry>>,
    changed: Condvar,
}

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| Registry {
        models: Mutex::new(HashMap::new()),
        changed: Condvar::new(),
    })
}

static LOADS: AtomicU64 = AtomicU64::new(0);

/// Models loaded from disk by this process so far (shared acquisitions not counted).
pub fn loads() -> u64 {
    LOADS.load(Ordering::SeqCst)
}

/// Models alive in the registry now.
pub fn models_alive() -> usize {
    lock_models()
        .values()
        .filter(|e| matches!(e, Entry::Ready(w) if w.strong_count() > 0))
        .count()
}

fn lock_models() -> std::sync::MutexGuard<'static, HashMap<ModelKey, Entry>> {
    registry()
        .models
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

/// A model from the registry.
pub struct Acquired {
    pub model: Arc<MmAudio>,
    /// `true`: it was loaded already (by another user) and is shared, not loaded again.
    pub shared: bool,
    pub key: ModelKey,
}

/// Clears the `Loading` mark if the load does not finish (error or panic), and wakes the
/// waiters so that one of them loads.
struct LoadingMark(Option<ModelKey>);

impl Drop for LoadingMark {
    fn drop(&mut self) {
        if let Some(key) = self.0.take() {
            lock_models().remove(&key);
            registry().changed.notify_all();
        }
    }
}

/// The model `opts` describe: the loaded one if a user holds it, else loaded now (once, even
/// when several threads ask together). `progress` gets the loader's lines (not called when
/// the model is shared).
pub fn acquire(opts: &LoadOptions, progress: &mut dyn FnMut(&str)) -> Result<Acquired> {
    let resolved = Resolved::new(opts)?;
    let key = ModelKey::new(&resolved);
    let reg = registry();
    let mut models = lock_models();
    loop {
        match models.get(&key) {
            Some(Entry::Ready(w)) => {
                if let Some(model) = w.upgrade() {
                    return Ok(Acquired {
                        model,
                        shared: true,
                        key,
                    });
                }
                break; // released: load again
            }
            Some(Entry::Loading) => {
                models = reg
                    .changed
                    .wait(models)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            None => break,
        }
    }
    models.insert(key.clone(), Entry::Loading);
    drop(models);
    let mut mark = LoadingMark(Some(key.clone()));
    LOADS.fetch_add(1, Ordering::SeqCst);
    let model = Arc::new(load_resolved(&resolved, progress)?);
    mark.0 = None;
    lock_models().insert(key.clone(), Entry::Ready(Arc::downgrade(&model)));
    reg.changed.notify_all();
    Ok(Acquired {
        model,
        shared: false,
        key,
    })
}

/// A stream generator on the shared model of `opts`, sampling through its device's worker;
/// the flag says whether the model was shared rather than loaded.
pub fn stream(opts: &LoadOptions, progress: &mut dyn FnMut(&str)) -> Result<(MmAudioStream, bool)> {
    let a = acquire(opts, progress)?;
    let worker = DeviceWorker::for_device(&a.model.device_name)?;
    Ok((MmAudioStream::with_worker(a.model, worker), a.shared))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Mode;

    fn tiny_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("mmaudio-shared-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        crate::test_model::write_test_model(&dir, Mode::Khz16, 7).unwrap();
        dir
    }

    fn opts(dir: &std::path::Path) -> LoadOptions {
        LoadOptions {
            model_dir: dir.to_path_buf(),
            device: "cpu".into(),
            precision: "f32".into(),
            ..Default::default()
        }
    }

    /// Threads asking together load once; `auto` and the folder's variant are one model;
    /// the model is released with its last user and loaded again after.
    #[test]
    fn loads_once_shares_and_releases() {
        let dir = tiny_dir("once");
        let key_count = |k: &ModelKey| {
            lock_models()
                .get(k)
                .map(|e| matches!(e, Entry::Ready(w) if w.strong_count() > 0))
        };
        let before = loads();
        let got: Vec<Acquired> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..3)
                .map(|_| s.spawn(|| acquire(&opts(&dir), &mut |_| {}).unwrap()))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        // other tests of this binary use other folders; count only ours
        assert_eq!(got.iter().filter(|a| !a.shared).count(), 1);
        assert!(got.iter().all(|a| Arc::ptr_eq(&a.model, &got[0].model)));
        assert!(loads() - before >= 1);
        let explicit = acquire(
            &LoadOptions {
                variant: Some(got[0].model.variant),
                device: "auto".into(),
                precision: "auto".into(),
                ..opts(&dir)
            },
            &mut |_| {},
        )
        .unwrap();
        assert!(explicit.shared, "auto options resolve to the same model");
        let key = got[0].key.clone();
        drop(got);
        drop(explicit);
        assert_eq!(key_count(&key), Some(false), "released with the last user");
        let again = acquire(&opts(&dir), &mut |_| {}).unwrap();
        assert!(!again.shared, "loaded again after the release");
    }

    /// A failed load does not poison the key: the next request reports its own error.
    #[test]
    fn a_failed_load_is_not_remembered() {
        let dir = tiny_dir("fail");
        let net = dir.join(crate::model_dir::official_path(
            Variant::Small16k,
            crate::model_dir::Component::Net,
        ));
        let good = std::fs::read(&net).unwrap();
        std::fs::write(&net, b"not weights").unwrap();
        let e1 = acquire(&opts(&dir), &mut |_| {}).err().expect("corrupt");
        let e2 = acquire(&opts(&dir), &mut |_| {})
            .err()
            .expect("still corrupt");
        assert!(e1.to_string().contains(&*net.to_string_lossy()), "{e1}");
        assert_eq!(e1.to_string(), e2.to_string());
        std::fs::write(&net, good).unwrap();
        assert!(!acquire(&opts(&dir), &mut |_| {}).unwrap().shared);
    }
}
