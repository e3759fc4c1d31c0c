"""The conditioning kinds: `clip_vision`, `clip_text`, `clip_tokenizer`, `synchformer`,
`sync_segments`, `frame_preprocess`. The official FeaturesUtils methods, open_clip's
tokenizer, the official Synchformer and the two `v2.Compose` transforms built by the official
`eval_utils.load_video` (captured while it runs) are called; intermediates come from forward
hooks on the official modules."""

import copy
import types
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from _common import (CLIP_INIT_RULES, build_clip, build_synchformer, stamp, tolerances,
                     write_case)

GEN = 'tools/parity/make_fixtures.py (features.py)'
SEED = 20250101
CLIP_TINY = {
    'embed_dim': 48, 'quick_gelu': True,
    'vision_cfg': {'image_size': 378, 'layers': 2, 'width': 64, 'head_width': 32, 'patch_size': 14},
    'text_cfg': {'context_length': 77, 'vocab_size': 49408, 'width': 32, 'heads': 2, 'layers': 2},
}
SYNC_OVERRIDES = {'VIT.EMBED_DIM': 64, 'VIT.DEPTH': 2, 'VIT.NUM_HEADS': 2}
PROMPTS = ['', 'a dog barking', 'Waves crashing on the rocks, seagulls calling!',
           'an orchestra tuning up before a concert, violins and cellos playing long notes, a '
           'trumpet practising scales, the audience chatting quietly, programs rustling, somebody '
           'coughing in the back row, then the lights dim and everyone falls silent as the '
           'conductor walks on stage to loud applause']
STRINGS = [
    '', 'a dog barking', 'A Dog BARKING Loudly!!!', 'hello, world.', 'rain... thunder?! (distant)',
    'café crème brûlée naïve façade', 'Ünïcödé ÀÉÎÕÜ ßtraße', '🐶 barking 🔊🔊', '🎸🥁🎹',
    '3 gunshots at 120 bpm, 2.5 seconds', '1234567890', '   leading and trailing spaces   ',
    'tabs\tand\nnewlines\r\nmixed', 'multiple     internal      spaces',
    'a very long description of a busy city street at rush hour with cars honking, buses braking, '
    'people talking on their phones, a street musician playing the saxophone, pigeons flapping, '
    'a siren far away, footsteps on wet pavement and a dog barking at a cyclist who rings a bell',
    "it's the dog's bone, they're here, we've done, I'm ok, you'll see, he'd go",
    '&amp; &lt;html&gt; &quot;quoted&quot; &#39;apos&#39;', 'Mojibake: CafÃ© schÃ¶n',
    '中文 日本語 한국어', 'Привет мир', 'naïve — em dash – en dash … ellipsis',
    'snake_case_words and hyphen-ated-words', 'C++ / C# & Rust: fn main() { println!("hi"); }',
    '<start_of_text> literal special tokens <end_of_text>', 'x' * 300, ' '.join(['dog'] * 75),
    ' '.join(['dog'] * 76), '\xa0non-breaking\xa0space and zero\u200bwidth',
    'ﬁne ligature ＦＵＬＬＷＩＤＴＨ', '“smart quotes” ‘single’',
    'Waves crashing on the rocks, seagulls calling!',
]


def utf8_pack(strings):
    data, offs = bytearray(), [0]
    for s in strings:
        data += s.encode('utf-8')
        offs.append(len(data))
    return (torch.tensor(list(data), dtype=torch.uint8), torch.tensor(offs, dtype=torch.int64))


def feature_utils(clip=None, sync=None):
    import open_clip
    from torchvision.transforms import Normalize
    from mmaudio.model.utils.features_utils import FeaturesUtils
    fu = FeaturesUtils.__new__(FeaturesUtils)
    torch.nn.Module.__init__(fu)
    fu.clip_model = clip
    fu.clip_preprocess = Normalize(mean=[0.48145466, 0.4578275, 0.40821073],
                                   std=[0.26862954, 0.26130258, 0.27577711])
    fu.synchformer = sync
    fu.tokenizer = open_clip.get_tokenizer('ViT-H-14-378-quickgelu')
    fu.tod = None
    return fu.eval()


def hooked(module, names_to_modules, pre=()):
    """Forward hooks recording outputs (or inputs for names in `pre`), concatenated along
    dim 0 over repeated calls."""
    rec, hs = {}, []
    for name, m in names_to_modules.items():
        def hook(mod, a, o, name=name):
            t = (a[0] if name in pre else (o[0] if isinstance(o, tuple) else o)).clone()
            rec[name] = torch.cat([rec[name], t]) if name in rec else t
        if name in pre:
            hs.append(m.register_forward_pre_hook(lambda mod, a, h=hook: h(mod, a, None)))
        else:
            hs.append(m.register_forward_hook(hook))
    return rec, hs


def clip_vision_run(clip, video, dtype):
    clip = copy.deepcopy(clip).to(dtype)
    v = clip.visual
    mods = {'patch_embeds': v.conv1, 'tokens_before_ln_pre': v.ln_pre, 'ln_post_all': v.ln_post}
    for i, b in enumerate(v.transformer.resblocks):
        mods[f'block{i}_out'] = b
    rec, hs = hooked(clip, mods, pre=('tokens_before_ln_pre',))
    fu = feature_utils(clip)
    orig = clip.encode_image

    def encode_image(x, normalize=False):
        pooled = orig(x, normalize=False)
        rec['pooled_projected'] = pooled.clone()
        return orig(x, normalize=normalize)
    clip.encode_image = encode_image
    with torch.inference_mode():
        rec['clip_features'] = fu.encode_video_with_clip(video.to(dtype)).clone()
    for h in hs:
        h.remove()
    # the hooks fired twice (two encode_image calls): keep the first
    n = video.shape[0] * video.shape[1]
    for k in list(rec):
        if k not in ('clip_features', 'pooled_projected') and rec[k].shape[0] == 2 * n:
            rec[k] = rec[k][:n]
    rec['ln_post_cls'] = rec.pop('ln_post_all')[:, 0]
    return rec


def clip_text_run(clip, prompts, dtype):
    clip = copy.deepcopy(clip).to(dtype)
    mods = {'transformer_in': clip.transformer, 'ln_final_out': clip.ln_final}
    for i, b in enumerate(clip.transformer.resblocks):
        mods[f'block{i}_out'] = b
    rec, hs = hooked(clip, mods, pre=('transformer_in',))
    fu = feature_utils(clip)
    with torch.inference_mode():
        rec['text_features'] = fu.encode_text(prompts).clone()
        ids = fu.tokenizer(prompts)
        ln = rec['ln_final_out']
        pooled = ln[torch.arange(ln.shape[0]), ids.argmax(dim=-1)] @ clip.text_projection
    for h in hs:
        h.remove()
    rec['token_ids'] = ids
    rec['unused_standard_pooled_projected'] = pooled.clone()
    return rec


def sync_run(sync, video, dtype):
    sync = copy.deepcopy(sync).to(dtype)
    vf = sync.vfeat_extractor
    mods = {'patch_embed_3d_out': vf.patch_embed_3d, 'tokens_in': vf.blocks[0],
            'norm_out': vf.norm, 'spatial_agg_out': vf.spatial_attn_agg, 'synchformer_out': sync}
    for i, b in enumerate(vf.blocks):
        mods[f'block{i}_out'] = b
    rec, hs = hooked(sync, mods, pre=('tokens_in',))
    fu = feature_utils(sync=sync)
    with torch.inference_mode():
        rec['sync_features'] = fu.encode_video_with_sync(video.to(dtype)).clone()
    for h in hs:
        h.remove()
    return rec


def clip_meta(kind, call, cfg, seed):
    return {'kind': kind, 'official_call': call, 'open_clip_model_cfg_tiny': cfg,
            'open_clip_model_cfg_real': {'embed_dim': 1024, 'quick_gelu': True,
                                         'vision_cfg': {'image_size': 378, 'layers': 32,
                                                        'width': 1280, 'head_width': 80,
                                                        'patch_size': 14},
                                         'text_cfg': {'context_length': 77, 'vocab_size': 49408,
                                                      'width': 1024, 'heads': 16, 'layers': 24}},
            'seed': seed, 'init_rules': CLIP_INIT_RULES, 'weights_file': 'weights.safetensors'}


def three(fn, *a):
    return [fn(*a, d) for d in (torch.float32, torch.float32, torch.float64)]


def with_tol(meta, runs, main):
    per, observed = tolerances(*[runs[i] for i in (0, 2, 1)])
    meta['suggested_tolerance'] = {
        'default': {'atol': max(per[k]['atol'] for k in main), 'rtol': 1e-4}, 'per_tensor': per}
    meta['observed'] = observed
    meta['outputs'] = {k: {'shape': list(v.shape)} for k, v in runs[0].items()}
    return meta


def gen_clip(ref, out, only):
    clip = build_clip(CLIP_TINY, SEED)
    sd = clip.state_dict()
    if not only or any(o in 'clip_vision_tiny' for o in only):
        print('feature case clip_vision_tiny', flush=True)
        g = torch.Generator().manual_seed(SEED + 10)
        video = torch.rand(1, 2, 3, 384, 384, generator=g)
        runs = three(clip_vision_run, clip, video)
        meta = clip_meta('clip_vision', 'FeaturesUtils.encode_video_with_clip(x)', CLIP_TINY, SEED)
        meta = with_tol(meta, runs, ('clip_features',))
        meta.update(stamp(ref, GEN))
        write_case(out, 'clip_vision_tiny', meta, {'clip_video': video}, runs[0],
                   {k: v for k, v in sd.items() if k.startswith('visual.')})
    if not only or any(o in 'clip_text_tiny' for o in only):
        print('feature case clip_text_tiny', flush=True)
        runs = three(clip_text_run, clip, PROMPTS)
        meta = clip_meta('clip_text', 'FeaturesUtils.encode_text(prompts) (patched encode_text)',
                         CLIP_TINY, SEED)
        meta['prompts'] = PROMPTS
        meta = with_tol(meta, runs, ('text_features',))
        meta.update(stamp(ref, GEN))
        b, offs = utf8_pack(PROMPTS)
        write_case(out, 'clip_text_tiny', meta, {'prompts_utf8': b, 'prompts_utf8_offsets': offs},
                   runs[0], {k: v for k, v in sd.items() if not k.startswith('visual.')})


def gen_tokenizer(ref, out, only):
    if only and not any(o in 'tokenizer' for o in only):
        return
    import open_clip
    print('feature case tokenizer', flush=True)
    tok = open_clip.get_tokenizer('ViT-H-14-378-quickgelu')
    ids = tok(STRINGS)
    strings = []
    for s in STRINGS:
        cleaned = tok.clean_fn(s)
        pieces = [tok.decoder[t] for t in tok.encode(s)]
        strings.append({'text': s, 'cleaned': cleaned, 'n_bpe_tokens': len(pieces),
                        'untruncated_len_with_sot_eot': len(pieces) + 2,
                        'truncated': len(pieces) + 2 > 77, 'bpe_pieces': pieces})
    b, offs = utf8_pack(STRINGS)
    meta = {'kind': 'clip_tokenizer',
            'official_call': "open_clip.get_tokenizer('ViT-H-14-378-quickgelu')(strings)",
            'strings': strings, 'suggested_tolerance': 'exact (int64 equality)',
            'weights_file': None}
    meta.update(stamp(ref, GEN))
    write_case(out, 'tokenizer', meta, {'strings_utf8': b, 'strings_utf8_offsets': offs},
               {'token_ids': ids}, None)


def gen_synchformer(ref, out, only):
    if only and not any(o in 'synchformer_tiny' for o in only):
        return
    print('feature case synchformer_tiny', flush=True)
    sync, cfg = build_synchformer(SYNC_OVERRIDES, SEED)
    g = torch.Generator().manual_seed(SEED + 20)
    video = torch.rand(1, 24, 3, 224, 224, generator=g) * 2 - 1
    runs = three(sync_run, sync, video)
    meta = {'kind': 'synchformer',
            'official_call': 'FeaturesUtils.encode_video_with_sync(x) (batch_size=b: one '
                             'Synchformer call per segment at B = 1)',
            'config_overrides_tiny': SYNC_OVERRIDES, 'motionformer_cfg_effective': cfg,
            'seed': SEED, 'init_rules': CLIP_INIT_RULES, 'weights_file': 'weights.safetensors',
            'intermediates_note': 'per-segment hooks concatenated along dim 0'}
    meta = with_tol(meta, runs, ('sync_features',))
    meta.update(stamp(ref, GEN))
    write_case(out, 'synchformer_tiny', meta, {'sync_video': video}, runs[0], sync.state_dict())


class _Probe(torch.nn.Module):
    """Stands in for the Synchformer: returns, per output token, the frame ids its tubelet
    covers (the input frames carry their index as value)."""

    def forward(self, x):  # (BS, 1, 16, C, H, W)
        ids = x[:, 0, :, 0, 0, 0]  # (BS, 16)
        pairs = torch.stack([ids[:, 0::2], ids[:, 1::2]], dim=-1)  # (BS, 8, 2)
        return pairs.unsqueeze(1)


def gen_sync_segments(ref, out, only):
    if only and not any(o in 'sync_segments' for o in only):
        return
    from mmaudio.model.sequence_config import SequenceConfig
    print('feature case sync_segments', flush=True)
    outputs, per = {}, []
    for n in (200, 133):
        fu = feature_utils(sync=_Probe())
        video = torch.arange(n, dtype=torch.float32).view(1, n, 1, 1, 1).expand(1, n, 3, 224, 224)
        segs = []
        orig = fu.synchformer.forward

        def probe(x, orig=orig, segs=segs):
            segs.append(x[:, 0, :, 0, 0, 0].clone())
            return orig(x)
        fu.synchformer.forward = probe
        with torch.inference_mode():
            pairs = fu.encode_video_with_sync(video)  # (1, S*8, 2)
        seg_ids = torch.cat(segs).to(torch.int64)
        outputs[f'N{n}_segment_frame_ids'] = seg_ids
        outputs[f'N{n}_token_frame_pairs'] = pairs[0].to(torch.int64)
        sc = SequenceConfig(duration=n / 25, sampling_rate=16000, spectrogram_frame_rate=256)
        per.append({'num_frames': n, 'fps': 25, 'duration_sec': n / 25,
                    'num_segments': int(seg_ids.shape[0]), 'sync_seq_len': int(pairs.shape[1]),
                    'first_segment': seg_ids[0].tolist(), 'last_segment': seg_ids[-1].tolist(),
                    'SequenceConfig(duration=N/25).sync_seq_len': sc.sync_seq_len,
                    'SequenceConfig(duration=N/25).clip_seq_len': sc.clip_seq_len})
    meta = {'kind': 'sync_segments',
            'official_call': 'FeaturesUtils.encode_video_with_sync on a video whose frame t is '
                             'filled with t, the Synchformer replaced by a probe returning the '
                             'frame ids of each output token',
            'per_length': per, 'no_weights': True, 'suggested_tolerance': 'exact',
            'weights_file': None}
    meta.update(stamp(ref, GEN))
    write_case(out, 'sync_segments', meta,
               {'num_frames': torch.tensor([200, 133], dtype=torch.int64)}, outputs, None)


# ------------------------------------------------------------------------------ frames

def capture_transforms():
    """The two v2.Compose objects the official load_video builds (captured while it runs on a
    one-frame in-memory video)."""
    import mmaudio.data.av_utils as avu
    import mmaudio.eval_utils as eu
    built = []
    orig = eu.v2.Compose

    class Capture(orig):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            built.append(self)
    frame = types.SimpleNamespace(time=0.0, to_ndarray=lambda format=None: np.zeros((32, 48, 3),
                                                                                   np.uint8))
    cont = types.SimpleNamespace(
        streams=types.SimpleNamespace(video=[types.SimpleNamespace(guessed_rate=Fraction(25),
                                                                   thread_type=None)]),
        demux=lambda s: iter([types.SimpleNamespace(decode=lambda: [frame])]))

    class Ctx:
        def __enter__(self):
            return cont

        def __exit__(self, *a):
            return False
    saved_av = avu.av
    eu.v2.Compose = Capture
    avu.av = types.SimpleNamespace(open=lambda p: Ctx())
    try:
        eu.load_video(Path('x.mp4'), 0.04)
    finally:
        eu.v2.Compose = orig
        avu.av = saved_av
    assert len(built) == 2
    return built[0], built[1]


def code_frame(k, w, h, rs):
    img = np.zeros((h, w, 3), np.uint8)
    img[...] = rs.randint(40, 200, size=(1, 1, 3))
    yy, xx = np.mgrid[0:h, 0:w]
    img[..., 0] = (img[..., 0] + xx * 2 + k) % 256
    for b in range(10):
        v = 255 if (k >> b) & 1 else 0
        img[2:10, 2 + 8 * b:10 + 8 * b] = v
    return img


def read_code(img):
    return sum(1 << b for b in range(10) if img[2:10, 2 + 8 * b:10 + 8 * b].mean() > 127)


def write_mp4(path, n, rate, w=128, h=96):
    import av
    rs = np.random.RandomState(n)
    with av.open(str(path), 'w') as c:
        s = c.add_stream('libx264', rate=rate)
        s.width, s.height, s.pix_fmt = w, h, 'yuv420p'
        s.options = {'crf': '12'}
        for k in range(n):
            for p in s.encode(av.VideoFrame.from_ndarray(code_frame(k, w, h, rs), format='rgb24')):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def gen_frame_preprocess(ref, out, only):
    if only and not any(o in 'frame_preprocess' for o in only):
        return
    import av
    import mmaudio.eval_utils as eu
    print('feature case frame_preprocess', flush=True)
    clip_t, sync_t = capture_transforms()
    rs = np.random.RandomState(SEED)
    h, w = 360, 640
    frames = np.zeros((2, h, w, 3), np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    frames[0, ..., 0] = (xx * 255 // w)
    frames[0, ..., 1] = (yy * 255 // h)
    frames[0, ..., 2] = np.where((xx // 40 + yy // 40) % 2 == 0, 230, 20)
    frames[1] = rs.randint(0, 256, size=(h, w, 3))
    frames[1, 100:200, 200:400] = [255, 255, 255]
    x = torch.from_numpy(frames).permute(0, 3, 1, 2)
    outputs = {
        'clip_frames': clip_t(x), 'sync_frames': sync_t(x),
        'clip_resized_u8': clip_t.transforms[0](x), 'sync_resized_u8': sync_t.transforms[0](x),
        'sync_cropped_u8': sync_t.transforms[1](sync_t.transforms[0](x)),
    }
    d = out / 'frame_preprocess'
    d.mkdir(parents=True, exist_ok=True)
    videos = []
    for name, n, rate in (('30fps_8s', 240, Fraction(30)), ('23p976fps_8s', 192, Fraction(24000, 1001))):
        path = d / f'{name}.mp4'
        write_mp4(path, n, rate)
        pts, times = [], []
        with av.open(str(path)) as c:
            s = c.streams.video[0]
            tb, guessed = s.time_base, s.guessed_rate
            for f in c.decode(s):
                pts.append(f.pts)
                times.append(f.time)
        picked = {}
        saved = eu.read_frames

        def read_frames(*a, **kw):
            o, all_frames, r = saved(*a, **kw)
            for tag, arr in zip(('clip8', 'sync25'), o):
                picked[tag] = [read_code(f) for f in arr]
            return o, all_frames, r
        eu.read_frames = read_frames
        try:
            info = eu.load_video(path, 8.0, load_all_frames=False)
        finally:
            eu.read_frames = saved
        order = np.argsort(pts)
        outputs[f'{name}_src_pts'] = torch.tensor(np.array(pts)[order], dtype=torch.int64)
        outputs[f'{name}_src_time'] = torch.tensor(np.array(times)[order], dtype=torch.float64)
        for tag, fps, n_keep in (('clip8', 8.0, info.clip_frames.shape[0]),
                                 ('sync25', 25.0, info.sync_frames.shape[0])):
            outputs[f'{name}_{tag}_src_index'] = torch.tensor(picked[tag][:n_keep], dtype=torch.int64)
            # the slot times read_frames walks through: next_t += 1/fps from 0 (float64)
            slots, t = [], 0.0
            for _ in range(n_keep):
                slots.append(t)
                t += 1 / fps
            outputs[f'{name}_{tag}_slot_time'] = torch.tensor(slots, dtype=torch.float64)
        videos.append({'name': name, 'file': f'{name}.mp4 (libx264 crf 12, yuv420p, 128x96) {n} '
                       f'frames at {rate} fps', 'stream_time_base': str(tb),
                       'guessed_rate': str(guessed), 'load_video_duration_arg': 8.0,
                       'returned_duration_sec': info.duration_sec, 'decoded_frames': len(pts),
                       'clip_frames': int(info.clip_frames.shape[0]),
                       'sync_frames': int(info.sync_frames.shape[0])})
    meta = {'kind': 'frame_preprocess',
            'official_call': 'the two v2.Compose objects built by eval_utils.load_video (captured) '
                             'applied to uint8 frames; eval_utils.load_video on the mp4 files',
            'transforms_repr': {'clip': repr(clip_t), 'sync': repr(sync_t)},
            'sampling_videos': videos,
            'video_files_note': 'every frame carries its index as a 10-bit code: bit b = '
                                'mean(frame[2:10, 2+8b:10+8b]) > 127',
            'suggested_tolerance': {'per_tensor': {'clip_frames': {'atol': 1e-6, 'rtol': 0.0},
                                                   'sync_frames': {'atol': 1e-6, 'rtol': 0.0}},
                                    'default': {'atol': 1e-6, 'rtol': 0.0}},
            'weights_file': None}
    meta.update(stamp(ref, GEN))
    write_case(out, 'frame_preprocess', meta, {'frames_u8': torch.from_numpy(frames)}, outputs, None)


def generate(ref, out: Path, only=None):
    out.mkdir(parents=True, exist_ok=True)
    gen_clip(ref, out, only)
    gen_tokenizer(ref, out, only)
    gen_synchformer(ref, out, only)
    gen_sync_segments(ref, out, only)
    gen_frame_preprocess(ref, out, only)
