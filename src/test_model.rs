//! Small random MMAudio model folders for tests and CI (`mmaudio make-test-model`).
//!
//! Every component is written in the format its official checkpoint ships in — `.pth`
//! state dicts under the official key names (the vocoder nested under `generator`), the CLIP
//! as an open_clip safetensors file with its `open_clip_config.json` — at the official
//! places of the model folder, plus an `mmaudio.json` manifest carrying the (tiny)
//! hyper-parameters. The generator loads it through exactly the code that loads real
//! weights; only the sizes differ. The output is noise, but with the real sequence lengths,
//! sample rates and sample counts.

use crate::NetConfig;
use crate::config::{Mode, Variant};
use crate::error::Result;
use crate::features::clip::{ClipConfig, ClipText, ClipVision};
use crate::features::synchformer::{Synchformer, SynchformerConfig};
use crate::model_dir::{Component, ComponentEntry, MANIFEST, Manifest, official_path};
use crate::net::MmAudioNet;
use crate::vae::{Vae, VaeConfig, VaeParts, VaeWeights};
use crate::vocoder::{BigVgan, BigVganConfig};
use crate::weights::random::random_state_dict;
use crate::weights::write_pth;
use candle_core::Tensor;
use serde_json::json;
use std::collections::HashMap;
use std::path::Path;

/// Width of the tiny feature encoders (= the tiny network's clip/sync/text dims).
const FEAT: usize = 32;

fn sorted(sd: HashMap<String, Tensor>) -> Vec<(String, Tensor)> {
    let mut v: Vec<_> = sd.into_iter().collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// The tiny configurations of a test model of `mode`.
pub fn tiny_configs(
    mode: Mode,
) -> (
    NetConfig,
    VaeConfig,
    BigVganConfig,
    serde_json::Value,
    serde_json::Value,
) {
    let latent = 8;
    let net = NetConfig {
        latent_dim: latent,
        clip_dim: FEAT,
        sync_dim: FEAT,
        text_dim: FEAT,
        hidden_dim: 64,
        depth: 3,
        fused_depth: 1,
        num_heads: 1,
        mlp_ratio: 4.0,
        text_seq_len: 77,
        v2: mode == Mode::Khz44,
    };
    let vae = VaeConfig {
        data_dim: mode.n_mels(),
        embed_dim: latent,
        hidden_dim: 8,
    };
    let mut voc = BigVganConfig::for_mode(mode);
    voc.upsample_initial_channel = 64;
    let clip = json!({
        "embed_dim": FEAT,
        "quick_gelu": true,
        "vision_cfg": {"image_size": 378, "layers": 1, "width": 32, "head_width": 16, "patch_size": 14},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": FEAT, "heads": 2, "layers": 1}
    });
    let sync = json!({"VIT": {"EMBED_DIM": FEAT, "DEPTH": 1, "NUM_HEADS": 2}});
    (net, vae, voc, clip, sync)
}

/// Write a complete tiny model folder for `mode` into `dir` (created if needed). Returns the
/// manifest it wrote.
pub fn write_test_model(dir: &Path, mode: Mode, seed: u64) -> Result<Manifest> {
    std::fs::create_dir_all(dir)?;
    // the official file names of a variant of this mode
    let variant = match mode {
        Mode::Khz16 => Variant::Small16k,
        Mode::Khz44 => Variant::Small44k,
    };
    let (net_cfg, vae_cfg, voc_cfg, clip_json, sync_json) = tiny_configs(mode);
    let path_of = |c: Component| -> std::path::PathBuf {
        let p = dir.join(official_path(variant, c));
        if let Some(parent) = p.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        p
    };
    let rel = |c: Component| official_path(variant, c).to_string_lossy().into_owned();

    // flow network
    let mut net_sd = crate::net::random_weights(&net_cfg, seed)?;
    // plausible empty-string features: unit-norm rows like CLIP's
    if let Some(e) = net_sd.get_mut("empty_string_feat") {
        let n = e.sqr()?.sum_keepdim(1)?.sqrt()?;
        *e = e.broadcast_div(&n)?;
    }
    write_pth(&path_of(Component::Net), &sorted(net_sd), None)?;
    let _ = MmAudioNet::new; // (the constructor that reads it)

    // VAE (encoder and decoder, raw weight-normalised form, as v1-16.pth / v1-44.pth)
    let mut vae_sd = random_state_dict(seed + 1, |vb| {
        Vae::new(
            &vae_cfg,
            vb,
            VaeParts {
                encoder: true,
                decoder: true,
            },
            VaeWeights::Raw,
        )
        .map(|_| ())
    })?;
    for (k, v) in vae_sd.iter_mut() {
        if k.ends_with("data_std") {
            *v = (v.abs()? + 1.0)?;
        }
    }
    write_pth(&path_of(Component::Vae), &sorted(vae_sd), None)?;

    // vocoder, nested under `generator`, with the real anti-aliasing filters
    let mut voc_sd = random_state_dict(seed + 2, |vb| BigVgan::new(&voc_cfg, vb).map(|_| ()))?;
    let filt = crate::vocoder::ops::kaiser_sinc_filter(0.25, 0.3, crate::vocoder::ops::AA_KERNEL);
    for (k, v) in voc_sd.iter_mut() {
        if k.ends_with(".filter") {
            *v = Tensor::from_vec(filt.clone(), v.dims(), v.device())?;
        }
    }
    let voc_path = path_of(Component::Vocoder);
    write_pth(&voc_path, &sorted(voc_sd), Some("generator"))?;
    if mode == Mode::Khz44 {
        std::fs::write(
            voc_path.with_file_name("config.json"),
            serde_json::to_string_pretty(&voc_cfg).unwrap(),
        )?;
    }

    // Synchformer: the official file holds the state dict of the whole Synchformer; we write
    // its visual part (`vfeat_extractor.*`)
    let sync_cfg = SynchformerConfig::from_motionformer_cfg(&sync_json)?;
    let sync_sd = random_state_dict(seed + 3, |vb| Synchformer::new(&sync_cfg, vb).map(|_| ()))?;
    write_pth(&path_of(Component::Synchformer), &sorted(sync_sd), None)?;

    // CLIP: open_clip safetensors + config, as the Hugging Face repo
    let clip_cfg = ClipConfig::from_open_clip_json(&clip_json)?;
    let mut clip_sd = random_state_dict(seed + 4, |vb| {
        ClipVision::new(&clip_cfg, vb.clone())?;
        ClipText::new(&clip_cfg, vb)?;
        Ok(())
    })?;
    let dev = candle_core::Device::Cpu;
    clip_sd.insert(
        "text_projection".into(),
        Tensor::zeros((FEAT, FEAT), candle_core::DType::F32, &dev)?,
    );
    clip_sd.insert(
        "logit_scale".into(),
        Tensor::new(&[4.6f32], &dev)?.reshape(())?,
    );
    let clip_path = path_of(Component::Clip);
    candle_core::safetensors::save(&clip_sd, &clip_path)?;
    std::fs::write(
        clip_path.with_file_name("open_clip_config.json"),
        serde_json::to_string_pretty(&json!({"model_cfg": clip_json})).unwrap(),
    )?;

    let entry =
        |c: Component, key: Option<&str>, config: Option<serde_json::Value>| ComponentEntry {
            file: rel(c),
            key: key.map(str::to_string),
            config,
            md5: None,
        };
    // each entry carries the MD5 of its file, so `mmaudio check-weights` verifies these
    // files (not the official checkpoints they are named after) and reports no error
    let md5 = |c: Component| -> Result<Option<String>> {
        Ok(Some(
            crate::weights::checksums::hash_file(&dir.join(rel(c)), &mut |_| {})?.md5,
        ))
    };
    let entry = |c: Component,
                 key: Option<&str>,
                 config: Option<serde_json::Value>|
     -> Result<ComponentEntry> {
        Ok(ComponentEntry {
            md5: md5(c)?,
            ..entry(c, key, config)
        })
    };
    let manifest = Manifest {
        format: 1,
        variant: Some(variant),
        mode: Some(mode),
        description: Some(format!(
            "tiny random test model ({mode}) written by `mmaudio make-test-model` — produces noise, \
             for tests of the pipeline only"
        )),
        net: Some(entry(
            Component::Net,
            None,
            Some(serde_json::to_value(&net_cfg).unwrap()),
        )?),
        vae: Some(entry(
            Component::Vae,
            None,
            Some(serde_json::to_value(vae_cfg).unwrap()),
        )?),
        vocoder: Some(entry(
            Component::Vocoder,
            Some("generator"),
            Some(serde_json::to_value(&voc_cfg).unwrap()),
        )?),
        synchformer: Some(entry(Component::Synchformer, None, Some(sync_json))?),
        clip: Some(entry(Component::Clip, None, Some(clip_json))?),
    };
    std::fs::write(
        dir.join(MANIFEST),
        serde_json::to_string_pretty(&manifest).unwrap(),
    )?;
    Ok(manifest)
}
