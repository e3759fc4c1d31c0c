//! GStreamer plugin `mmaudio`: the `mmaudiogen` element, which generates a synchronized
//! Foley soundtrack for a video stream with MMAudio (see [`mmaudiogen`]).
//!
//! Built as `libgstmmaudio.so` (cdylib) for `GST_PLUGIN_PATH`, and as an rlib so that
//! applications and tests can register it statically ([`plugin_register_static`]) and
//! inject their own generator ([`mmaudiogen::MMAudioGen::set_generator_factory`]).

use gst::glib;

pub mod mmaudiogen;

pub use mmaudiogen::{GeneratorFactory, MMAudioGen, ModelPrecision, ModelVariant};

fn plugin_init(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    mmaudiogen::register(plugin)
}

gst::plugin_define!(
    mmaudio,
    env!("CARGO_PKG_DESCRIPTION"),
    plugin_init,
    concat!(env!("CARGO_PKG_VERSION"), "-", env!("COMMIT_ID")),
    "MIT/X11",
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_REPOSITORY"),
    env!("BUILD_REL_DATE")
);
