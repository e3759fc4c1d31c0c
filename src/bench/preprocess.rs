//! `mmaudio bench preprocess`: frame picking + the CLIP and Synchformer transforms on
//! 1920×1080 RGB24 frames (the uint8 bicubic resize dominates), and the element's
//! on-arrival `prepare_frame` on one 1080p frame as RGB24, I420 and NV12 (the YUV → RGB
//! conversion happens row by row inside the resize).

use super::{BenchOpts, BenchReport, time_runs};
use crate::error::Result;
use crate::features::frames::plan_frames;
use crate::features::pixels::{Colorimetry, PixelFormat, Plane, RawFrame};
use crate::features::preprocess::{Transform, prepare_frame, transform_frames};
use crate::request::VideoFrame;
use std::sync::Arc;

const W: usize = 1920;
const H: usize = 1080;
const SOURCE_FPS: f64 = 30.0;

/// `n` frames of a 30 fps source (pts i/30); 4 distinct pixel buffers shared between them
/// (each frame index is still processed separately).
fn frames(n: usize) -> Vec<VideoFrame> {
    let bufs: Vec<Arc<Vec<u8>>> = (0..4u32)
        .map(|s| {
            let mut x = s.wrapping_mul(2654435761).wrapping_add(7);
            Arc::new(
                (0..W * H * 3)
                    .map(|i| {
                        x ^= x << 13;
                        x ^= x >> 17;
                        x ^= x << 5;
                        if (i / 3 / W).is_multiple_of(9) {
                            255
                        } else {
                            (x >> 24) as u8
                        }
                    })
                    .collect(),
            )
        })
        .collect();
    (0..n)
        .map(|i| VideoFrame {
            prepared: None,
            pts: i as f64 / SOURCE_FPS,
            width: W,
            height: H,
            data: bufs[i % bufs.len()].clone(),
            id: None,
        })
        .collect()
}

pub fn run(opts: &BenchOpts) -> Result<Vec<BenchReport>> {
    let threads = rayon::current_num_threads();
    let mut reports = Vec::new();
    // per-transform cost on `opts.frames` distinct frames
    let n = opts.frames.max(1);
    let fs = frames(n);
    let idx: Vec<usize> = (0..n).collect();
    for (t, name) in [(Transform::Clip, "clip"), (Transform::Sync, "sync")] {
        let times = time_runs(opts.warmup, opts.runs, &opts.device, || {
            transform_frames(t, &fs, &idx, &opts.device)?;
            Ok(())
        })?;
        let r = BenchReport::new(
            &format!("preprocess {name} {W}x{H} x{n}"),
            &format!("{name} transform of {n} distinct {W}x{H} RGB24 frames"),
            times,
            opts,
        );
        let per = r.median_s / n as f64 * 1e3;
        reports.push(r.with("ms_per_frame", per).with("threads", threads as u64));
    }
    // on arrival: one frame prepared for both models, per input format
    let rgb = fs[0].data.clone();
    let luma: Vec<u8> = rgb.chunks_exact(3).map(|p| p[1]).collect();
    let chroma: Vec<u8> = (0..W * H / 2).map(|i| (i * 7 % 251) as u8).collect();
    let yuv = |format: PixelFormat| -> RawFrame<'_> {
        let (u, v) = chroma.split_at(W * H / 4);
        let planes = match format {
            PixelFormat::I420 => [
                Plane {
                    data: &luma,
                    stride: W,
                },
                Plane {
                    data: u,
                    stride: W / 2,
                },
                Plane {
                    data: v,
                    stride: W / 2,
                },
            ],
            _ => [
                Plane {
                    data: &luma,
                    stride: W,
                },
                Plane {
                    data: &chroma,
                    stride: W,
                },
                Plane::default(),
            ],
        };
        RawFrame {
            format,
            width: W,
            height: H,
            planes,
            colorimetry: Colorimetry::default(),
            field: None,
        }
    };
    for (name, frame) in [
        ("rgb24", RawFrame::rgb(W, H, &rgb)),
        ("i420", yuv(PixelFormat::I420)),
        ("nv12", yuv(PixelFormat::Nv12)),
    ] {
        let times = time_runs(opts.warmup, opts.runs, &opts.device, || {
            prepare_frame(&frame)?;
            Ok(())
        })?;
        reports.push(
            BenchReport::new(
                &format!("preprocess prepare_frame {name} {W}x{H}"),
                &format!("one {W}x{H} {name} frame resized for CLIP and Synchformer on arrival"),
                times,
                opts,
            )
            .with("threads", threads as u64),
        );
    }
    // a whole window: pick 8/25 fps slots from a 30 fps source, transform both streams
    let n = (opts.duration * SOURCE_FPS).ceil() as usize + 1;
    let fs = frames(n);
    let times_s: Vec<f64> = fs.iter().map(|f| f.pts).collect();
    let times = time_runs(opts.warmup, opts.runs, &opts.device, || {
        let plan = plan_frames(&times_s, opts.duration)?;
        transform_frames(Transform::Clip, &fs, &plan.clip.indices, &opts.device)?;
        transform_frames(Transform::Sync, &fs, &plan.sync.indices, &opts.device)?;
        Ok(())
    })?;
    let plan = plan_frames(&times_s, opts.duration)?;
    reports.push(
        BenchReport::new(
            &format!("preprocess window {}s 30fps", opts.duration),
            "plan_frames + clip (8 fps) + sync (25 fps) transforms of one window of 1080p30",
            times,
            opts,
        )
        .with("clip_frames", plan.clip.len() as u64)
        .with("sync_frames", plan.sync.len() as u64)
        .with("threads", threads as u64),
    );
    Ok(reports)
}
