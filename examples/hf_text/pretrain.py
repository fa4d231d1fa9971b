"""Pre-train a tiny BERT as a masked language model on `corpus.txt`, then save_pretrained.

    python examples/hf_text/pretrain.py WORK_DIR [MINUTES]

A WordPiece tokenizer is trained on the corpus with the `tokenizers` library; a BERT
(hidden size 64, 2 layers) learns to fill in masked tokens (15% of them, BERT's
80/10/10 recipe via transformers' DataCollatorForLanguageModeling) for MINUTES of
wall time on one CPU thread. The tokenizer and the model go to `WORK_DIR/pretrained/`,
the folder a user would download from the hub: `model.name: hf/WORK_DIR/pretrained`.
`WORK_DIR/scratch/` gets the same tokenizer and architecture with untrained weights.
This is a plain PyTorch loop: brickwork trains classifiers, not language models.
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

import torch

MAX_LENGTH, BATCH_SIZE, LR = 64, 32, 1e-3


def train_tokenizer(corpus: list[str], folder: Path) -> object:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.train_from_iterator(
        corpus, trainers.WordPieceTrainer(vocab_size=2000, special_tokens=specials)
    )
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        model_max_length=MAX_LENGTH,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    )
    fast.save_pretrained(folder)
    return fast


def main(work: Path, minutes: float) -> None:
    from transformers import BertConfig, BertForMaskedLM, DataCollatorForLanguageModeling

    torch.set_num_threads(1)  # a shared machine; tiny matrices gain nothing from more
    torch.manual_seed(0)
    corpus = (work / "corpus.txt").read_text(encoding="utf-8").splitlines()
    tokenizer: object = train_tokenizer(corpus, work / "pretrained")
    train_tokenizer(corpus, work / "scratch")
    config = BertConfig(
        vocab_size=len(tokenizer),  # type: ignore[arg-type]
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=256,
        max_position_embeddings=MAX_LENGTH,
    )
    BertForMaskedLM(config).save_pretrained(work / "scratch")  # the untrained twin
    model = BertForMaskedLM(config)
    encoded = [tokenizer(s, truncation=True, max_length=MAX_LENGTH) for s in corpus]  # type: ignore[operator]
    collate = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15)  # type: ignore[arg-type]
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.01)
    rng, started, step, losses = random.Random(0), time.perf_counter(), 0, []
    model.train()
    while time.perf_counter() - started < minutes * 60:
        batch = collate(rng.sample(encoded, BATCH_SIZE))
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        step += 1
        if step % 200 == 0:
            print(f"step {step}: masked-token loss {sum(losses[-200:]) / 200:.3f}", flush=True)
    model.save_pretrained(work / "pretrained")
    record = {
        "steps": step,
        "minutes": round((time.perf_counter() - started) / 60, 2),
        "first_200_loss": round(sum(losses[:200]) / max(len(losses[:200]), 1), 3),
        "last_200_loss": round(sum(losses[-200:]) / max(len(losses[-200:]), 1), 3),
        "corpus_sentences": len(corpus),
    }
    (work / "pretrain.json").write_text(json.dumps(record, indent=1) + "\n")
    print(f"pre-training: {record}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), float(sys.argv[2]) if len(sys.argv) > 2 else 12.0)
