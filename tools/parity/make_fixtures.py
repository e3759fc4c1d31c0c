#!/usr/bin/env python3
"""Regenerate the parity fixtures from the official MMAudio code (development only).

    python tools/parity/make_fixtures.py --ref <MMAudio checkout> --out <folder> [--set ...]

Sets: `e2e` (the end-to-end cases committed in tests/fixtures/e2e), `generation` (network,
sampler, VAE, vocoders, mel converters) and `features` (CLIP, tokenizer, Synchformer, frame
picking and preprocessing); `all` = the three. See tools/parity/README.md.
"""

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from _common import Ref, set_threads  # noqa: E402

OFFICIAL_COMMIT = '974010a026c731054592d8f777218bd9d85a6c24'


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--ref', type=Path, required=True, help='checkout of hkchengrex/MMAudio')
    ap.add_argument('--ref-commit', default=None,
                    help=f'commit of the checkout (default: git rev-parse, else {OFFICIAL_COMMIT})')
    ap.add_argument('--out', type=Path, required=True, help='output folder (one sub-folder per case)')
    ap.add_argument('--set', dest='sets', action='append',
                    choices=['e2e', 'generation', 'features', 'all'],
                    help='which cases (repeatable; default all)')
    ap.add_argument('--only', action='append', help='only cases whose name contains this')
    ap.add_argument('--threads', type=int, default=2)
    a = ap.parse_args()
    commit = a.ref_commit
    if commit is None:
        try:
            commit = subprocess.run(['git', '-C', str(a.ref), 'rev-parse', 'HEAD'], check=True,
                                    capture_output=True, text=True).stdout.strip()
        except Exception:
            commit = OFFICIAL_COMMIT
    if commit != OFFICIAL_COMMIT:
        print(f'warning: reference commit {commit} is not the audited {OFFICIAL_COMMIT}',
              file=sys.stderr)
    ref = Ref(a.ref, commit)
    set_threads(a.threads)
    torch.use_deterministic_algorithms(True)
    sets = set(a.sets or ['all'])
    if 'all' in sets:
        sets = {'e2e', 'generation', 'features'}
    t0 = time.time()
    if 'generation' in sets:
        import generation
        generation.generate(ref, a.out, a.only)
    if 'features' in sets:
        import features
        features.generate(ref, a.out, a.only)
    if 'e2e' in sets:
        import e2e
        e2e.generate(ref, a.out, a.only)
    print(f'done in {time.time() - t0:.0f} s', flush=True)


if __name__ == '__main__':
    main()
