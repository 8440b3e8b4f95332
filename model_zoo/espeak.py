"""Speech from espeak-ng's shared library (the espeakng-loader wheel's, fetched by model_zoo.data),
one utterance per process: espeak-ng keeps state between utterances (the same text comes out a few
samples longer or shorter after another one), so a fresh process makes each text's samples depend on
the text alone. Standalone on purpose (ctypes only): run as

    python espeak.py ROOT TEXT   ->  stdout: the sample rate (4 bytes, little endian) then int16 samples

where ROOT holds libespeak-ng.so* and espeak-ng-data/.
"""

import ctypes
import glob
import os
import struct
import sys


def main(root: str, text: str) -> int:
    libs = sorted(glob.glob(os.path.join(root, "libespeak-ng.so*")))
    if not libs:
        print(f"no libespeak-ng.so in {root}", file=sys.stderr)
        return 1
    lib = ctypes.CDLL(libs[0])
    chunks = []
    proto = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

    def collect(wav, n, events):
        if n > 0:
            chunks.append(ctypes.string_at(wav, 2 * n))
        return 0

    callback = proto(collect)
    rate = lib.espeak_Initialize(0x02, 0, os.path.join(root, "espeak-ng-data").encode(), 0)  # AUDIO_OUTPUT_SYNCHRONOUS
    if rate <= 0:
        print(f"espeak_Initialize failed ({rate})", file=sys.stderr)
        return 1
    lib.espeak_SetSynthCallback(callback)
    if lib.espeak_SetVoiceByName(b"en-us") != 0:
        print("espeak-ng has no en-us voice", file=sys.stderr)
        return 1
    data = text.encode()
    lib.espeak_Synth(data, len(data) + 1, 0, 1, 0, 0, None, None)  # POS_CHARACTER, espeakCHARS_AUTO
    lib.espeak_Synchronize()
    out = sys.stdout.buffer
    out.write(struct.pack("<i", rate))
    out.write(b"".join(chunks))
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
