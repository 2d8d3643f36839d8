"""Per-clip musicnn embeddings for FD-musicnn. Runs inside .venv-musicnn (envs/musicnn.lock), never
in the main env: it imports TensorFlow, and TensorFlow and torch are not loaded into one process.

    .venv-musicnn/bin/python scripts/musicnn_embed.py --out emb.npz [--list paths.json] [WAV ...]

For each WAV: read (soundfile), average to mono and resample to musicnn's 16 kHz (soxr_hq, as
librosa.load does), the log-mel that
musicnn.extractor.batch_data computes (512-point FFT, hop 256, 96 mels, log10(10000·mel + 1),
float16), cut into non-overlapping 3 s patches (187 frames, musicnn's input_length=3 without
overlap). A clip shorter than one patch is repeat-padded, as musicnn's training did
("pad_short": "repeat-pad" in its config.json). The embedding is the mean over the clip's patches
of the 200-unit penultimate layer (batch-normalised ReLU dense, musicnn's "penultimate") of
MSD_musicnn, whose weights ship inside the musicnn wheel. The graph is built and restored once
and every clip goes through the same session; each clip runs on its own, so its embedding does not
depend on which other clips share the call (the caller caches per clip).

Output .npz: paths [n] str, embeddings [n, 200] float32 (NaN rows where status != "ok"),
n_patches [n], padded [n] bool, duration_s [n], status [n] str, meta (one JSON string: model,
layer, versions, clips/s). Dependencies: numpy, librosa, soundfile, tensorflow, musicnn only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import librosa  # noqa: E402
import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

# musicnn 0.1.0 builds its graph with tf.compat.v1.layers, each call a deprecation warning
warnings.filterwarnings("ignore", message=r"`tf\.layers\.", category=UserWarning)

MODELS = ("MSD_musicnn", "MTT_musicnn")
LAYER = "penultimate"
INPUT_LENGTH_S = 3


def n_frames_per_patch() -> int:
    from musicnn import configuration as config

    # musicnn.extractor.extractor's conversion of input_length seconds to frames
    return (
        int(
            librosa.time_to_frames(
                INPUT_LENGTH_S, sr=config.SR, n_fft=config.FFT_SIZE, hop_length=config.FFT_HOP
            )
        )
        + 1
    )


def log_mel(path: str) -> np.ndarray:
    """[time, 96] float16: musicnn.extractor.batch_data's input representation."""
    from musicnn import configuration as config

    # librosa.load(path, sr=16000) without its audioread fallback: soundfile, mean to mono,
    # soxr_hq resampling (librosa's default res_type)
    audio, sr = sf.read(path, dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    if sr != config.SR:
        audio = librosa.resample(audio, orig_sr=sr, target_sr=config.SR, res_type="soxr_hq")
        sr = config.SR
    rep = librosa.feature.melspectrogram(
        y=audio, sr=sr, hop_length=config.FFT_HOP, n_fft=config.FFT_SIZE, n_mels=config.N_MELS
    ).T
    rep = rep.astype(np.float16)
    return np.log10(10000 * rep + 1)


def patches(path: str, n_frames: int) -> tuple[np.ndarray, bool, float]:
    """[n_patches, n_frames, 96] non-overlapping patches, whether the clip was repeat-padded, and
    its duration in seconds."""
    from musicnn import configuration as config

    rep = log_mel(path)
    duration = rep.shape[0] * config.FFT_HOP / config.SR
    padded = rep.shape[0] < n_frames
    if rep.shape[0] == 0:
        raise ValueError("empty audio")
    if padded:
        rep = np.tile(rep, (int(np.ceil(n_frames / rep.shape[0])), 1))
    starts = range(0, rep.shape[0] - n_frames + 1, n_frames)
    return np.stack([rep[s : s + n_frames] for s in starts]), padded, duration


class Embedder:
    def __init__(self, model: str = "MSD_musicnn", threads: int = 0):
        import musicnn
        import tensorflow as tf
        from musicnn import configuration as config
        from musicnn import models

        tf.compat.v1.disable_eager_execution()
        labels = config.MSD_LABELS if model.startswith("MSD") else config.MTT_LABELS
        self.n_frames = n_frames_per_patch()
        self.graph = tf.Graph()
        with self.graph.as_default():
            with tf.name_scope("model"):
                self.x = tf.compat.v1.placeholder(tf.float32, [None, self.n_frames, config.N_MELS])
                self.is_training = tf.compat.v1.placeholder(tf.bool)
                outputs = models.define_model(self.x, self.is_training, model, len(labels))
            self.penultimate = outputs[-1]
            session_config = tf.compat.v1.ConfigProto(
                intra_op_parallelism_threads=threads, inter_op_parallelism_threads=1
            )
            self.sess = tf.compat.v1.Session(graph=self.graph, config=session_config)
            saver = tf.compat.v1.train.Saver()
            # musicnn's checkpoints have an empty prefix inside the model's folder
            checkpoint = os.path.join(os.path.dirname(musicnn.__file__), model) + "/"
            saver.restore(self.sess, checkpoint)
        self.meta = {
            "embedding": "musicnn",
            "model": model,
            "layer": LAYER,
            "dim": int(self.penultimate.shape[-1]),
            "sample_rate": config.SR,
            "patch_s": INPUT_LENGTH_S,
            "patch_frames": self.n_frames,
            "pooling": "mean over non-overlapping patches",
            "tensorflow": tf.__version__,
            "numpy": np.__version__,
            "librosa": librosa.__version__,
            "musicnn": getattr(musicnn, "__version__", "0.1.0"),
        }

    def embed(self, path: str) -> tuple[np.ndarray, int, bool, float]:
        batch, padded, duration = patches(path, self.n_frames)
        out = self.sess.run(
            self.penultimate, feed_dict={self.x: batch.astype(np.float32), self.is_training: False}
        )
        return out.mean(axis=0).astype(np.float32), len(batch), padded, duration


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("wavs", nargs="*", help="WAV paths")
    parser.add_argument("--list", type=Path, help="a JSON file holding a list of WAV paths")
    parser.add_argument("--out", type=Path, required=True, help="output .npz")
    parser.add_argument("--model", default="MSD_musicnn", choices=MODELS)
    parser.add_argument("--threads", type=int, default=0, help="TF intra-op threads (0: all)")
    args = parser.parse_args(argv)
    paths = [str(p) for p in args.wavs]
    if args.list is not None:
        paths += [str(p) for p in json.loads(args.list.read_text())]
    if not paths:
        parser.error("no WAV paths given")

    t0 = time.perf_counter()
    embedder = Embedder(args.model, args.threads)
    t_load = time.perf_counter() - t0
    dim = embedder.meta["dim"]
    emb = np.full((len(paths), dim), np.nan, np.float32)
    n_patches = np.zeros(len(paths), np.int64)
    padded = np.zeros(len(paths), bool)
    duration = np.full(len(paths), np.nan)
    status = []
    t1 = time.perf_counter()
    for i, path in enumerate(paths):
        try:
            emb[i], n_patches[i], padded[i], duration[i] = embedder.embed(path)
            status.append("ok")
        except Exception as exc:  # one unreadable clip must not lose the batch's embeddings
            status.append(f"error: {type(exc).__name__}: {exc}")
    t_embed = time.perf_counter() - t1
    meta = embedder.meta | {
        "n_clips": len(paths),
        "model_load_s": round(t_load, 3),
        "embed_s": round(t_embed, 3),
        "clips_per_s": round(len(paths) / t_embed, 3) if t_embed > 0 else None,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp.npz")
    np.savez(
        tmp,
        paths=np.array(paths, dtype=str),
        embeddings=emb,
        n_patches=n_patches,
        padded=padded,
        duration_s=duration,
        status=np.array(status, dtype=str),
        meta=np.array(json.dumps(meta)),
    )
    os.replace(tmp, args.out)
    print(json.dumps(meta), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
