//! `frame_preprocess` (frame picking + the two official transforms) and `sync_segments`.

use crate::features::frames::{
    frame_time_from_ns, plan_frames, pts_to_seconds, sync_segments, sync_token_frames,
};
use crate::features::preprocess::{
    ResizePlan, Transform, short_side_resize, transform_frames, transform_u8,
};
use crate::parity::common::{Case, Checker, Outcome, Tol, as_i64};
use crate::request::VideoFrame;
use crate::{Mode, SequenceConfig};
use anyhow::{Context, Result, anyhow, bail};
use candle_core::{Device, Tensor};
use std::sync::Arc;

const EXACT: Tol = Tol {
    atol: 0.0,
    rtol: 0.0,
};

fn golden<'a>(g: &'a crate::parity::common::Tensors, name: &str) -> Result<&'a Tensor> {
    g.get(name)
        .ok_or_else(|| anyhow!("golden tensor `{name}` missing"))
}

fn u8_exact(
    chk: &mut Checker,
    name: &str,
    actual: &[u8],
    g: &crate::parity::common::Tensors,
) -> Result<()> {
    let want = golden(g, name)?;
    let n: usize = want.dims().iter().product();
    if n != actual.len() {
        chk.fail(format!(
            "{name}: {} values, golden {:?}",
            actual.len(),
            want.dims()
        ));
        return Ok(());
    }
    let a: Vec<i64> = actual.iter().map(|&v| v as i64).collect();
    chk.exact(name, &a, &as_i64(want)?);
    Ok(())
}

/// "a/b" or "a" → (a, b)
fn rational(s: &str) -> Result<(i64, i64)> {
    let mut it = s.split('/');
    let a = it.next().unwrap_or("").trim().parse::<i64>()?;
    let b = match it.next() {
        Some(b) => b.trim().parse::<i64>()?,
        None => 1,
    };
    Ok((a, b))
}

fn usize_vec(v: &[usize]) -> Vec<i64> {
    v.iter().map(|&x| x as i64).collect()
}

pub fn run_frame_preprocess(case: &Case, chk: &mut Checker) -> Result<Outcome> {
    let inputs = case.inputs()?;
    let g = case.outputs()?;

    // --- transforms on the uint8 input frames (N, H, W, 3) ---
    let fu8 = inputs
        .get("frames_u8")
        .ok_or_else(|| anyhow!("input frames_u8 missing"))?;
    let (n, h, w, c) = fu8.dims4()?;
    if c != 3 {
        bail!("frames_u8 must be (N, H, W, 3), got {:?}", fu8.dims());
    }
    let frames: Vec<VideoFrame> = (0..n)
        .map(|i| -> Result<VideoFrame> {
            Ok(VideoFrame::rgb(
                i as f64,
                w,
                h,
                Arc::new(fu8.get(i)?.flatten_all()?.to_vec1::<u8>()?),
            ))
        })
        .collect::<Result<_>>()?;
    let idx: Vec<usize> = (0..n).collect();

    u8_exact(
        chk,
        "clip_resized_u8",
        &transform_u8(Transform::Clip, &frames, &idx)?,
        &g,
    )?;
    // the full (uncropped) short-side resize
    let (rw, rh) = short_side_resize(w, h, crate::config::SYNC_SIZE);
    let full = ResizePlan::new(w, h, rw, rh, None)?;
    let mut resized = vec![0u8; n * full.output_len()];
    for (out, f) in resized.chunks_exact_mut(full.output_len()).zip(&frames) {
        full.run_u8(&f.data, out)?;
    }
    u8_exact(chk, "sync_resized_u8", &resized, &g)?;
    u8_exact(
        chk,
        "sync_cropped_u8",
        &transform_u8(Transform::Sync, &frames, &idx)?,
        &g,
    )?;

    let clip = transform_frames(Transform::Clip, &frames, &idx, &Device::Cpu)?;
    chk.check(case, "clip_frames", &clip, &g, true)?;
    let sync = transform_frames(Transform::Sync, &frames, &idx, &Device::Cpu)?;
    chk.check(case, "sync_frames", &sync, &g, true)?;

    // the element's path: each frame prepared once on arrival (full frame dropped)
    let prepared: Vec<VideoFrame> = frames
        .iter()
        .map(|f| -> Result<VideoFrame> {
            let p = crate::features::preprocess::prepare_frame(
                &crate::features::pixels::RawFrame::rgb(f.width, f.height, &f.data),
            )?;
            Ok(VideoFrame {
                data: Arc::new(Vec::new()),
                prepared: Some(Arc::new(p)),
                ..f.clone()
            })
        })
        .collect::<Result<_>>()?;
    let clip_p = transform_frames(Transform::Clip, &prepared, &idx, &Device::Cpu)?;
    chk.check(case, "clip_frames", &clip_p, &g, true)?;
    let sync_p = transform_frames(Transform::Sync, &prepared, &idx, &Device::Cpu)?;
    chk.check(case, "sync_frames", &sync_p, &g, true)?;

    // --- frame picking on the recorded pts of the sampling videos ---
    let videos = case
        .at("sampling_videos")?
        .as_array()
        .ok_or_else(|| anyhow!("sampling_videos is not a list"))?;
    for v in videos {
        let name = v["name"]
            .as_str()
            .ok_or_else(|| anyhow!("sampling video without name"))?;
        let tb = rational(v["stream_time_base"].as_str().unwrap_or(""))
            .with_context(|| format!("{name}: stream_time_base"))?;
        let rate = rational(v["guessed_rate"].as_str().unwrap_or(""))
            .with_context(|| format!("{name}: guessed_rate"))?;
        let dur = v["load_video_duration_arg"]
            .as_f64()
            .ok_or_else(|| anyhow!("{name}: load_video_duration_arg"))?;
        let pts = as_i64(golden(&g, &format!("{name}_src_pts"))?)?;
        chk.not_compared(
            &format!("{name}_src_pts"),
            "the container timestamps are the input of the picking (their times are compared)",
        );

        // PyAV frame.time from pts and timescale
        let times: Vec<f64> = pts.iter().map(|&p| pts_to_seconds(p, tb)).collect();
        let tname = format!("{name}_src_time");
        let t_t = Tensor::new(times.as_slice(), &Device::Cpu)?;
        chk.close(&tname, &t_t, golden(&g, &tname)?, EXACT)?;

        // the same times recovered from GStreamer-style nanoseconds (rounded down from the
        // timescale, as qtdemux does) and the stream frame rate
        let fr = (u32::try_from(rate.0)?, u32::try_from(rate.1)?);
        let ns: Vec<i64> = pts
            .iter()
            .map(|&p| (p as i128 * 1_000_000_000 * tb.0 as i128 / tb.1 as i128) as i64)
            .collect();
        let from_ns: Vec<f64> = ns
            .iter()
            .map(|&x| frame_time_from_ns(x, Some(fr)))
            .collect();
        chk.close(
            &format!("{tname}(from ns)"),
            &Tensor::new(from_ns.as_slice(), &Device::Cpu)?,
            golden(&g, &tname)?,
            EXACT,
        )?;
        let naive_diff = ns
            .iter()
            .zip(&times)
            .filter(|&(&x, &t)| x as f64 / 1e9 != t)
            .count();

        let plan = plan_frames(&times, dur)?;
        for (pick, tag) in [(&plan.clip, "clip8"), (&plan.sync, "sync25")] {
            let iname = format!("{name}_{tag}_src_index");
            chk.exact(
                &iname,
                &usize_vec(&pick.indices),
                &as_i64(golden(&g, &iname)?)?,
            );
            let sname = format!("{name}_{tag}_slot_time");
            chk.close(
                &sname,
                &Tensor::new(pick.slot_times.as_slice(), &Device::Cpu)?,
                golden(&g, &sname)?,
                EXACT,
            )?;
        }
        let want_d = v["returned_duration_sec"]
            .as_f64()
            .ok_or_else(|| anyhow!("{name}: returned_duration_sec"))?;
        if plan.duration != want_d {
            chk.fail(format!(
                "{name}: returned duration {} != golden {want_d}",
                plan.duration
            ));
        }
        for (key, got) in [
            ("clip_frames", plan.clip.len()),
            ("sync_frames", plan.sync.len()),
        ] {
            if let Some(want) = v[key].as_u64()
                && want as usize != got
            {
                chk.fail(format!("{name}: {key} {got} != golden {want}"));
            }
        }
        // picks from the ns-derived times are the same
        let plan_ns = plan_frames(&from_ns, dur)?;
        if plan_ns != plan {
            chk.fail(format!("{name}: picks from nanosecond times differ"));
        }
        let naive: Vec<f64> = ns.iter().map(|&x| x as f64 / 1e9).collect();
        let plan_naive = plan_frames(&naive, dur)?;
        let flips = plan_naive
            .sync
            .indices
            .iter()
            .zip(&plan.sync.indices)
            .chain(plan_naive.clip.indices.iter().zip(&plan.clip.indices))
            .filter(|(a, b)| a != b)
            .count();
        chk.notes.push(format!(
            "{name}: {} frames, tb {}/{}, rate {}/{}: picks exact; naive ns/1e9 times differ \
             from PyAV on {naive_diff} frames and change {flips} picks",
            pts.len(),
            tb.0,
            tb.1,
            rate.0,
            rate.1
        ));
    }
    Ok(Outcome::Ran)
}

pub fn run_sync_segments(case: &Case, chk: &mut Checker) -> Result<Outcome> {
    let inputs = case.inputs()?;
    let g = case.outputs()?;
    let ns = as_i64(
        inputs
            .get("num_frames")
            .ok_or_else(|| anyhow!("input num_frames missing"))?,
    )?;
    for &n in &ns {
        let n = usize::try_from(n)?;
        let segs = sync_segments(n)?;
        let ids: Vec<i64> = segs
            .iter()
            .flat_map(|r| r.clone().map(|f| f as i64))
            .collect();
        let name = format!("N{n}_segment_frame_ids");
        let want = golden(&g, &name)?;
        if want.dims() != [segs.len(), segs.first().map_or(0, |r| r.len())] {
            chk.fail(format!(
                "{name}: {} segments of 16, golden {:?}",
                segs.len(),
                want.dims()
            ));
        }
        chk.exact(&name, &ids, &as_i64(want)?);
        let pairs: Vec<i64> = sync_token_frames(n)?
            .into_iter()
            .flat_map(|(a, b)| [a as i64, b as i64])
            .collect();
        let name = format!("N{n}_token_frame_pairs");
        chk.exact(&name, &pairs, &as_i64(golden(&g, &name)?)?);
    }
    // the per-length summaries, including the sequence lengths derived from the duration
    if let Some(list) = case.json["per_length"].as_array() {
        for e in list {
            let n = e["num_frames"].as_u64().unwrap_or(0) as usize;
            let s = sync_segments(n)?.len();
            let want_s = e["num_segments"].as_u64().unwrap_or(u64::MAX) as usize;
            if s != want_s {
                chk.fail(format!("N{n}: {s} segments, golden {want_s}"));
            }
            let tok = sync_token_frames(n)?.len();
            if Some(tok as u64) != e["sync_seq_len"].as_u64() {
                chk.fail(format!("N{n}: {tok} tokens, golden {}", e["sync_seq_len"]));
            }
            let dur = e["duration_sec"].as_f64().unwrap_or(f64::NAN);
            let sc = SequenceConfig::new(dur, Mode::Khz16);
            for (key, got) in [
                (
                    "SequenceConfig(duration=N/25).sync_seq_len",
                    sc.sync_seq_len(),
                ),
                (
                    "SequenceConfig(duration=N/25).clip_seq_len",
                    sc.clip_seq_len(),
                ),
            ] {
                if let Some(want) = e[key].as_u64()
                    && want as usize != got
                {
                    chk.fail(format!("N{n}: {key} = {got}, golden {want}"));
                }
            }
        }
    }
    // T < 16 must be a clear error
    match sync_segments(15) {
        Err(e) if e.to_string().contains("16") => {}
        other => chk.fail(format!("15 frames should be an error, got {other:?}")),
    }
    Ok(Outcome::Ran)
}
