"""Built-in text classifiers for `text_csv`: a recurrent one and a small transformer.

Both take the padded batch `text_csv`'s collate builds, a dict with `tokens` (B, T),
`lengths` (B,) and `mask` (B, T; True on real tokens), and return (B, num_classes).
A plain (B, T) tensor of token ids works too, with 0 taken as padding.
`vocab_size` and `num_classes` come from the data.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import PositiveInt
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from brickwork.models.basic import Probability
from brickwork.registry import register

TextBatch = dict[str, torch.Tensor] | torch.Tensor


def unpack_text_batch(batch: TextBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(tokens, lengths, mask) from `pad_collate`'s dict or from a padded id tensor."""
    if isinstance(batch, torch.Tensor):
        mask = batch != 0  # (B, T)
        return batch, mask.sum(1), mask
    return batch["tokens"], batch["lengths"], batch["mask"]


@register("model", "text_rnn")
class TextRNN(nn.Module):
    """Embedding, a (bi)GRU or LSTM over the packed sequence, last hidden states, linear head."""

    def __init__(
        self,
        vocab_size: int,
        num_classes: int,
        embedding_dim: PositiveInt = 64,
        hidden_size: PositiveInt = 64,
        cell: Literal["gru", "lstm"] = "gru",
        num_layers: PositiveInt = 1,
        bidirectional: bool = True,
        dropout: Probability = 0.1,
    ) -> None:
        super().__init__()
        if cell not in ("gru", "lstm"):
            raise ValueError(f"cell = '{cell}': expected gru or lstm")
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=0)
        rnn = nn.GRU if cell == "gru" else nn.LSTM
        self.rnn = rnn(
            embedding_dim,
            hidden_size,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        directions = 2 if bidirectional else 1
        self.head = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(hidden_size * directions, num_classes)
        )

    def forward(self, batch: TextBatch) -> torch.Tensor:
        tokens, lengths, _ = unpack_text_batch(batch)
        embedded = self.embedding(tokens)  # (B, T, E)
        # Packing skips the padding, so the final state is each sequence's own last token.
        packed = pack_padded_sequence(
            embedded, lengths.cpu().clamp(min=1), batch_first=True, enforce_sorted=False
        )
        _, hidden = self.rnn(packed)
        if isinstance(hidden, tuple):  # LSTM: (h, c)
            hidden = hidden[0]
        directions = 2 if self.rnn.bidirectional else 1
        last = hidden[-directions:].transpose(0, 1).reshape(hidden.shape[1], -1)  # (B, H*dirs)
        return self.head(last)


@register("model", "text_transformer")
class TextTransformer(nn.Module):
    """Token + learned position embeddings, a pre-norm Transformer encoder, masked mean pool."""

    def __init__(
        self,
        vocab_size: int,
        num_classes: int,
        dim: PositiveInt = 64,
        num_heads: PositiveInt = 4,
        num_layers: PositiveInt = 2,
        max_length: PositiveInt = 512,
        dropout: Probability = 0.1,
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, dim, padding_idx=0)
        self.position = nn.Embedding(max_length, dim)
        layer = nn.TransformerEncoderLayer(
            dim,
            num_heads,
            dim_feedforward=4 * dim,
            dropout=dropout,
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        self.max_length = max_length

    def forward(self, batch: TextBatch) -> torch.Tensor:
        tokens, _, mask = unpack_text_batch(batch)  # (B, T), (B, T) True on tokens
        if tokens.shape[1] > self.max_length:
            raise ValueError(
                f"sequence length {tokens.shape[1]} exceeds model.max_length={self.max_length}"
            )
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.embedding(tokens) + self.position(positions)  # (B, T, D)
        x = self.norm(self.encoder(x, src_key_padding_mask=~mask))
        weights = mask.unsqueeze(-1).to(x.dtype)  # (B, T, 1)
        pooled = (x * weights).sum(1) / weights.sum(1).clamp(min=1)  # (B, D)
        return self.head(pooled)
