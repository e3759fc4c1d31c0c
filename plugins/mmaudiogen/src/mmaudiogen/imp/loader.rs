//! Model loading on its own thread at READY→PAUSED, with PROGRESS messages and an ERROR
//! naming the file on failure.

use super::*;

/// A model loading failure: the message names the file and the reason.
pub(super) struct LoadError {
    domain: gst::ResourceError,
    message: String,
}

impl From<mmaudio::Error> for LoadError {
    fn from(err: mmaudio::Error) -> Self {
        use mmaudio::Error as E;
        let domain = match &err {
            E::MissingFile { .. } => gst::ResourceError::NotFound,
            E::WeightFile { .. }
            | E::MissingTensor { .. }
            | E::ShapeMismatch { .. }
            | E::WrongModel { .. }
            | E::Io(_) => gst::ResourceError::Read,
            E::Config(_) => gst::ResourceError::Settings,
            _ => gst::ResourceError::Failed,
        };
        LoadError {
            domain,
            message: format!("Could not load the MMAudio model: {err}"),
        }
    }
}

/// The default way to get a generator: check `model-dir`, then the core library's loader.
/// With an injected factory, the factory alone decides.
pub(super) fn load_generator(
    options: &LoadOptions,
    factory: Option<&GeneratorFactory>,
) -> Result<Box<dyn AudioGenerator>, LoadError> {
    if let Some(factory) = factory {
        return factory(options).map_err(LoadError::from);
    }
    let dir = &options.model_dir;
    let hint = "set the model-dir property (or the MMAUDIO_MODEL_DIR environment variable) \
                to the folder holding the MMAudio weights, e.g. one made by `mmaudio \
                fetch-weights --variant small_16k --dir models`";
    match std::fs::metadata(dir) {
        Err(err) => {
            return Err(LoadError {
                domain: gst::ResourceError::NotFound,
                message: format!(
                    "Model directory {} does not exist or cannot be read ({err}): {hint}",
                    dir.display()
                ),
            });
        }
        Ok(meta) if !meta.is_dir() => {
            return Err(LoadError {
                domain: gst::ResourceError::NotFound,
                message: format!(
                    "Model directory {} is not a directory: {hint}",
                    dir.display()
                ),
            });
        }
        Ok(_) => {}
    }
    mmaudio::model::load_generator(options).map_err(LoadError::from)
}

/// The requested variant for messages (`auto` when the folder decides).
fn variant_name(options: &LoadOptions) -> String {
    options
        .variant
        .map_or_else(|| "auto".into(), |v| v.to_string())
}

/// The `mmaudiogen-model` element message: what was loaded (see the module documentation).
fn model_structure(info: &mmaudio::generator::ModelInfo, elapsed: Duration) -> gst::Structure {
    gst::Structure::builder("mmaudiogen-model")
        .field("name", &info.name)
        .field(
            "variant",
            info.variant.map_or_else(String::new, |v| v.to_string()),
        )
        .field("rate", info.sample_rate)
        .field("device", info.device.clone().unwrap_or_default())
        .field("precision", info.precision.clone().unwrap_or_default())
        .field(
            "load-time",
            gst::ClockTime::from_nseconds(elapsed.as_nanos() as u64),
        )
        .build()
}

impl MMAudioGen {
    /// Start loading the model on its own thread unless the right one is loaded or
    /// loading.
    pub(super) fn start_loading(&self) {
        let options = lock(&self.settings).load_options();
        let (factory, factory_id) = {
            let f = lock(&self.factory);
            (f.0.clone(), f.1)
        };
        let key = ModelKey {
            options: options.clone(),
            factory_id,
        };
        let id = {
            let mut shared = lock(&self.shared);
            match &shared.model {
                Model::Ready { key: k, .. } | Model::Loading(k) if *k == key => {
                    gst::debug!(CAT, imp = self, "Model already loaded or loading");
                    return;
                }
                _ => {}
            }
            shared.load_id += 1;
            shared.model = Model::Loading(key.clone());
            shared.load_id
        };
        let what = format!(
            "MMAudio {} from {} (device {}, precision {})",
            variant_name(&options),
            options.model_dir.display(),
            options.device,
            options.precision
        );
        gst::info!(CAT, imp = self, "Loading {what}");
        let _ = self.obj().post_message(
            gst::message::Progress::builder(
                gst::ProgressType::Start,
                "load",
                &format!("Loading {what}"),
            )
            .src(&*self.obj())
            .build(),
        );
        let weak = self.obj().downgrade();
        let spawned = std::thread::Builder::new()
            .name("mmaudiogen-load".into())
            .spawn(move || {
                let started = Instant::now();
                let result = panic::catch_unwind(AssertUnwindSafe(|| {
                    load_generator(&options, factory.as_deref())
                }))
                .unwrap_or_else(|panic| {
                    Err(LoadError {
                        domain: gst::ResourceError::Failed,
                        message: format!(
                            "Loading the MMAudio model panicked: {}",
                            panic_message(panic.as_ref())
                        ),
                    })
                });
                if let Some(obj) = weak.upgrade() {
                    obj.imp().finish_loading(id, key, result, started.elapsed());
                }
            });
        if let Err(err) = spawned {
            let key = ModelKey {
                options: lock(&self.settings).load_options(),
                factory_id,
            };
            let error = LoadError {
                domain: gst::ResourceError::Failed,
                message: format!("Cannot start the model loading thread: {err}"),
            };
            self.finish_loading(id, key, Err(error), Duration::ZERO);
        }
    }

    pub(super) fn finish_loading(
        &self,
        id: u64,
        key: ModelKey,
        result: Result<Box<dyn AudioGenerator>, LoadError>,
        elapsed: Duration,
    ) {
        let mut shared = lock(&self.shared);
        if shared.load_id != id {
            gst::debug!(CAT, imp = self, "Dropping a stale model load");
            return;
        }
        match result {
            Ok(generator) => {
                let info = generator.describe();
                let dir = key.options.model_dir.display().to_string();
                let traits = GeneratorInfo {
                    rate: generator.sample_rate(),
                    prepared: generator.wants_prepared_frames(),
                    picks: generator.picks_frames(),
                    period: generator.latent_period(),
                };
                shared.model = Model::Ready {
                    key,
                    generator: Arc::new(Mutex::new(generator)),
                    traits,
                };
                self.cond.notify_all();
                drop(shared);
                // The rate and latent period are known now (an `auto` variant guessed them).
                self.post_latency_if_changed();
                let text = format!("Loaded {info} from {dir} in {:.1} s", elapsed.as_secs_f64());
                gst::info!(CAT, imp = self, "{text}");
                let obj = self.obj();
                let _ = obj.post_message(
                    gst::message::Progress::builder(gst::ProgressType::Complete, "load", &text)
                        .src(&*obj)
                        .build(),
                );
                // without debug text, which gst-launch-1.0 would print (with the source
                // location) after the PROGRESS line that already says this
                let _ = obj.post_message(
                    gst::message::Info::builder(gst::CoreError::Failed, &text)
                        .src(&*obj)
                        .build(),
                );
                let _ = obj.post_message(
                    gst::message::Element::builder(model_structure(&info, elapsed))
                        .src(&*obj)
                        .build(),
                );
            }
            Err(err) => {
                // The ERROR goes on the bus before anything can see the failure: a chain
                // waiting for the model returns a flow error as soon as the model is marked
                // failed, and upstream then posts its generic "Internal data stream error",
                // which must come second.
                drop(shared);
                let options = &key.options;
                let _ = self.obj().post_message(
                    gst::message::Progress::builder(gst::ProgressType::Error, "load", &err.message)
                        .src(&*self.obj())
                        .build(),
                );
                gst::element_imp_error!(
                    self,
                    err.domain,
                    ("{}", err.message),
                    [
                        "model-dir={}, variant={}, device={}, precision={}",
                        options.model_dir.display(),
                        variant_name(options),
                        options.device,
                        options.precision
                    ]
                );
                let mut shared = lock(&self.shared);
                if shared.load_id != id {
                    return;
                }
                shared.model = Model::Failed;
                if !shared.flushing {
                    shared.flow = Err(gst::FlowError::Error);
                }
                self.cond.notify_all();
            }
        }
    }
}
