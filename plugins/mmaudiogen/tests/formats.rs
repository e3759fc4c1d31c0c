//! The raw video formats decoders produce, read by `mmaudiogen` without `videoconvert`.
//!
//! Each format's frames are made from one RGB picture by GStreamer's own converter (the
//! engine of `videoconvert`), pushed through the element (whose generator asks for frames
//! prepared on arrival, as the MMAudio one does), and compared with an independent path:
//! the same frame converted back to RGB by `videoconvert`'s engine, then prepared by the
//! library. RGB input must come out bit-identical; YUV within the stated tolerances (the
//! two differ only in how chroma is interpolated and rounded). Hand-computed pixels check
//! the matrix and range the caps' colorimetry names, and interlaced frames are read as
//! their first field.

mod common;

use common::*;
use gst::prelude::*;
use gst_check::Harness;
use gst_video::VideoFormat as F;
use mmaudio::features::pixels::RawFrame;
use mmaudio::features::preprocess::prepare_frame;

const W: u32 = 96;
const H: u32 = 64;

/// A picture with smooth gradients, a sharp-edged disc and fine stripes.
fn picture(w: u32, h: u32) -> Vec<u8> {
    let mut rgb = Vec::with_capacity((w * h * 3) as usize);
    for y in 0..h {
        for x in 0..w {
            let (fx, fy) = (x as f64 / w as f64, y as f64 / h as f64);
            let (dx, dy) = (fx - 0.6, fy - 0.45);
            let disc = dx * dx + dy * dy < 0.05;
            let stripe = x / 3 % 2 == 0 && y > h * 3 / 4;
            let px = if disc {
                [230.0, 40.0, 60.0]
            } else if stripe {
                [250.0, 250.0, 250.0]
            } else {
                [
                    30.0 + 200.0 * fx,
                    220.0 - 160.0 * fy,
                    120.0 + 80.0 * (5.0 * fx + 3.0 * fy).sin(),
                ]
            };
            rgb.extend(px.map(|v: f64| v.round() as u8));
        }
    }
    rgb
}

fn info(format: F, w: u32, h: u32) -> gst_video::VideoInfo {
    gst_video::VideoInfo::builder(format, w, h)
        .fps(gst::Fraction::new(25, 1))
        .build()
        .unwrap()
}

/// Convert a frame with GStreamer's video converter (what `videoconvert` runs).
fn convert(
    buffer: &gst::Buffer,
    from: &gst_video::VideoInfo,
    to: &gst_video::VideoInfo,
) -> gst::Buffer {
    let conv = gst_video::VideoConverter::new(from, to, None).unwrap();
    let src = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer.as_ref(), from).unwrap();
    let mut out = gst::Buffer::with_size(to.size()).unwrap();
    {
        let mut dst =
            gst_video::VideoFrameRef::from_buffer_ref_writable(out.get_mut().unwrap(), to).unwrap();
        conv.frame_ref(&src, &mut dst);
    }
    out
}

fn rgb_buffer(rgb: &[u8], w: u32, h: u32) -> (gst::Buffer, gst_video::VideoInfo) {
    let info = info(F::Rgb, w, h);
    let stride = info.stride()[0] as usize;
    let mut buf = gst::Buffer::with_size(info.size()).unwrap();
    {
        let mut map = buf.get_mut().unwrap().map_writable().unwrap();
        for (y, row) in rgb.chunks_exact(w as usize * 3).enumerate() {
            map[y * stride..y * stride + row.len()].copy_from_slice(row);
        }
    }
    (buf, info)
}

/// Packed RGB24 without padding from an RGB buffer laid out as `info` says.
fn packed(buffer: &gst::Buffer, info: &gst_video::VideoInfo) -> Vec<u8> {
    let (w, h) = (info.width() as usize, info.height() as usize);
    let stride = info.stride()[0] as usize;
    let map = buffer.map_readable().unwrap();
    (0..h)
        .flat_map(|y| map[y * stride..y * stride + w * 3].to_vec())
        .collect()
}

/// Push `frames` (all of caps `caps`) through a `mmaudiogen` whose generator asks for
/// prepared frames; return what it saw.
fn through_element(caps: &gst::Caps, frames: Vec<gst::Buffer>) -> Vec<(Vec<u8>, Vec<u8>)> {
    let log: PreparedLog = Default::default();
    let element = element_prepared(16000, &log);
    element.set_property("window-duration", 640u32);
    element.set_property("overlap", 0u32);
    let mut h = Harness::with_element(&element, Some("sink"), Some("src"));
    h.set_src_caps(caps.clone());
    let n = frames.len() as u64;
    for (i, mut b) in frames.into_iter().enumerate() {
        {
            let b = b.make_mut();
            b.set_pts(gst::ClockTime::from_mseconds(40 * i as u64));
            b.set_duration(gst::ClockTime::from_mseconds(40));
        }
        h.push(b)
            .unwrap_or_else(|e| panic!("push {i} with caps {caps}: {e:?}"));
    }
    h.push_event(gst::event::Eos::new());
    let mut samples = 0;
    while let Some(b) = h.pull_until_eos().unwrap() {
        samples += b.size() / 4;
    }
    assert_eq!(samples as u64, n * 640, "output for {caps}");
    let seen = log.lock().unwrap();
    seen.iter()
        .map(|p| (p.clip.clone(), p.sync.clone()))
        .collect()
}

fn diff_stats(a: &[u8], b: &[u8]) -> (u8, f64) {
    assert_eq!(a.len(), b.len());
    let max = a.iter().zip(b).map(|(x, y)| x.abs_diff(*y)).max().unwrap();
    let mean = a
        .iter()
        .zip(b)
        .map(|(x, y)| x.abs_diff(*y) as f64)
        .sum::<f64>()
        / a.len() as f64;
    (max, mean)
}

/// Every format of the sink template is accepted without `videoconvert`, and its frames
/// are prepared (converted + resized for the models) as well as by the independent path,
/// `videoconvert`'s engine to RGB then the library's resize. Measured against the
/// original RGB picture the frames were made from, and against that path:
///
/// * the RGB family (with/without alpha or padding): bit-identical to the original;
/// * YUV and GRAY8: on average no further from the original than `videoconvert`'s path
///   (+ 0.25 level), and within 64 levels / 4 levels on average of it. The two differ by
///   design: `videoconvert` converts I420 to RGB with nearest-neighbour chroma (its fast
///   path; up to ~60 levels at sharp colour edges, where ours interpolates at the chroma
///   siting) and its matrix rounding is ~4 levels off in green (its Y444 round trip alone
///   is 3.8 levels off on average, ours 2.3).
#[test]
fn every_sink_format_is_prepared_like_videoconvert_rgb() {
    init();
    let rgb = picture(W, H);
    let (rgb_buf, rgb_info) = rgb_buffer(&rgb, W, H);
    let template = gst::ElementFactory::find("mmaudiogen")
        .unwrap()
        .static_pad_templates()
        .into_iter()
        .find(|t| t.name_template() == "sink")
        .unwrap()
        .caps();
    let mut formats = Vec::new();
    for s in template.iter() {
        let list = s.get::<gst::List>("format").unwrap();
        formats.extend(list.iter().map(|v| v.get::<String>().unwrap()));
    }
    for name in [
        "I420",
        "YV12",
        "NV12",
        "NV21",
        "Y42B",
        "Y444",
        "RGB",
        "BGR",
        "RGBA",
        "BGRA",
        "ARGB",
        "ABGR",
        "RGBx",
        "BGRx",
        "xRGB",
        "xBGR",
        "GRAY8",
        "I420_10LE",
        "I422_10LE",
        "Y444_10LE",
        "P010_10LE",
    ] {
        assert!(
            formats.iter().any(|f| f == name),
            "{name} not in {formats:?}"
        );
    }
    for name in &formats {
        let format = F::from_string(name);
        let source = if format == F::Gray8 {
            // a grey picture: GRAY8 carries no colour to compare
            rgb.chunks_exact(3)
                .flat_map(|p| {
                    let v = ((p[0] as u32 * 3 + p[1] as u32 * 5 + p[2] as u32 * 2) / 10) as u8;
                    [v; 3]
                })
                .collect()
        } else {
            rgb.clone()
        };
        let src_buf = if format == F::Gray8 {
            rgb_buffer(&source, W, H).0
        } else {
            rgb_buf.clone()
        };
        let original = prepare_frame(&RawFrame::rgb(W as usize, H as usize, &source)).unwrap();
        let fmt_info = info(format, W, H);
        let frame = convert(&src_buf, &rgb_info, &fmt_info);
        // the independent path: back to RGB by videoconvert's engine, then prepared
        let back = packed(&convert(&frame, &fmt_info, &rgb_info), &rgb_info);
        let reference = prepare_frame(&RawFrame::rgb(W as usize, H as usize, &back)).unwrap();
        let seen = through_element(&fmt_info.to_caps().unwrap(), vec![frame; 2]);
        assert_eq!(seen.len(), 2, "{name}");
        assert_eq!(seen[0], seen[1], "{name}: same frame, same result");
        let ours = [&seen[0].0[..], &seen[0].1[..]].concat();
        let orig = [&original.clip[..], &original.sync[..]].concat();
        let vc = [&reference.clip[..], &reference.sync[..]].concat();
        let (max_o, mean_o) = diff_stats(&ours, &orig);
        let (max_vo, mean_vo) = diff_stats(&vc, &orig);
        let (max_v, mean_v) = diff_stats(&ours, &vc);
        eprintln!(
            "{name}: ours vs original max {max_o} mean {mean_o:.2}; videoconvert path vs \
             original max {max_vo} mean {mean_vo:.2}; ours vs videoconvert path max {max_v} \
             mean {mean_v:.2}"
        );
        match format {
            F::Rgb
            | F::Bgr
            | F::Rgba
            | F::Bgra
            | F::Argb
            | F::Abgr
            | F::Rgbx
            | F::Bgrx
            | F::Xrgb
            | F::Xbgr => {
                assert_eq!(ours, orig, "{name}: not bit-identical");
                assert_eq!(ours, vc, "{name}");
            }
            _ => {
                assert!(
                    mean_o <= mean_vo + 0.25,
                    "{name}: {mean_o:.2} levels from the original, videoconvert {mean_vo:.2}"
                );
                assert!(
                    max_v <= 64 && mean_v <= 4.0,
                    "{name}: max {max_v} (≤ 64), mean {mean_v:.2} (≤ 4) from videoconvert's"
                );
            }
        }
    }
}

/// Uniform I420 frames: the pixel values follow the matrix and range of the caps.
/// Y=81 U=90 V=240 is pure red in BT.601 limited range: R = 1.164·65 + 1.596·112 = 254.4,
/// G = 75.7 + 0.392·38 − 0.813·112 = −0.5, B = 75.7 − 2.017·38 = −1.0 → (254, 0, 0).
/// In BT.709 the same values are R = 75.7 + 1.793·112 = 276 → 255, G = 75.7 + 0.213·38 −
/// 0.533·112 = 24.1 → 24, B = 75.7 − 2.112·38 = −4.6 → 0. In full-range BT.601 (JPEG):
/// R = 81 + 1.402·112 = 238.0, G = 81 + 0.344·38 − 0.714·112 = 14.1, B = 81 − 1.772·38 =
/// 13.7 → (238, 14, 14).
#[test]
fn colorimetry_of_the_caps_picks_the_matrix_and_range() {
    init();
    for (colorimetry, want) in [
        ("bt601", [254u8, 0, 0]),
        ("bt709", [255, 24, 0]),
        ("1:4:0:0", [238, 14, 14]),
    ] {
        let caps: gst::Caps = format!(
            "video/x-raw,format=I420,width=16,height=8,framerate=25/1,colorimetry={colorimetry}"
        )
        .parse()
        .unwrap();
        let info = gst_video::VideoInfo::from_caps(&caps).unwrap();
        let mut buf = gst::Buffer::with_size(info.size()).unwrap();
        {
            let mut map = buf.get_mut().unwrap().map_writable().unwrap();
            let off = info.offset();
            map[..off[1]].fill(81);
            map[off[1]..off[2]].fill(90);
            map[off[2]..].fill(240);
        }
        let seen = through_element(&caps, vec![buf]);
        for (plane, n) in [(&seen[0].0, 384 * 384), (&seen[0].1, 224 * 224)] {
            for c in 0..3 {
                let v = &plane[c * n..(c + 1) * n];
                assert!(
                    v.iter().all(|&x| x == want[c]),
                    "{colorimetry} channel {c}: {:?}… want {}",
                    &v[..4],
                    want[c]
                );
            }
        }
    }
}

/// Interlaced frames are read as their first field: top rows 50, bottom rows 200 gives a
/// picture of 50 when the top field comes first (caps field-order or the TFF buffer flag),
/// 200 otherwise; a progressive frame of the same bytes mixes both.
#[test]
fn interlaced_frames_are_read_as_their_first_field() {
    init();
    let (w, h) = (32usize, 16usize);
    let mut data = vec![0u8; w * h];
    for (y, row) in data.chunks_exact_mut(w).enumerate() {
        row.fill(if y % 2 == 0 { 50 } else { 200 });
    }
    let frame = |tff: bool| {
        let mut b = gst::Buffer::from_mut_slice(data.clone());
        let flags = if tff {
            gst_video::VideoBufferFlags::INTERLACED | gst_video::VideoBufferFlags::TFF
        } else {
            gst_video::VideoBufferFlags::INTERLACED
        };
        b.make_mut()
            .set_flags(gst::BufferFlags::from_bits_retain(flags.bits()));
        b
    };
    let base = format!("video/x-raw,format=GRAY8,width={w},height={h},framerate=25/1");
    for (mode, tff, want) in [
        ("interleaved", true, Some(50u8)),
        ("interleaved", false, Some(200)),
        ("mixed", true, Some(50)),
        ("progressive", true, None),
    ] {
        let caps: gst::Caps = format!("{base},interlace-mode={mode}").parse().unwrap();
        let seen = through_element(&caps, vec![frame(tff)]);
        let clip = &seen[0].0;
        match want {
            Some(v) => assert!(
                clip.iter().all(|&x| x == v),
                "{mode} tff={tff}: {:?}",
                &clip[..8]
            ),
            None => {
                // woven: both values appear, blurred together by the resize
                assert!(clip.iter().any(|&x| x < 120) && clip.iter().any(|&x| x > 130));
            }
        }
    }
    // field-order in the caps decides without buffer flags
    let caps: gst::Caps = format!("{base},interlace-mode=interleaved,field-order=top-field-first")
        .parse()
        .unwrap();
    let mut b = gst::Buffer::from_mut_slice(data.clone());
    b.make_mut().set_flags(gst::BufferFlags::from_bits_retain(
        gst_video::VideoBufferFlags::INTERLACED.bits(),
    ));
    let seen = through_element(&caps, vec![b]);
    assert!(seen[0].0.iter().all(|&x| x == 50));
}
