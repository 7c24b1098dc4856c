"""The events encoder: a small causal Transformer over timeline tokens (nanoGPT-shaped).

Each position sees its token, its age, the gap since the previous event and its normalised value.
Attention is causal, so the hidden state at position t depends on events 0..t only: the state at
the last event before a prediction time is that patient-time's embedding, untouched by the future.
Self-supervised objective: predict the next event: its token, *when* it comes (the gap to it, on
the input's log scale) and, when it carries a value, its value's quantile-bin position, so the
states know the tempo and the severity of a course, not only the order of its codes.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ray_training.modalities import Modality
from ray_training.settings import EventsConfig

MODALITY = Modality(
    name="events", reads="gold.timelines",
    columns=("tokens", "ages", "deltas", "values", "times", "prediction_times"),
    output="2 x d_model: the state at the last event before the prediction time, and the "
           "running mean of the states up to it",
)


def fusion_encoder(d_in: int, cfg) -> nn.Module:
    """The events part of the fusion: the frozen encoder's embedding (gold.event_embeddings) ->
    the fused space (ray_training.fusion)."""
    return nn.Sequential(nn.LayerNorm(d_in), nn.Linear(d_in, 2 * cfg.d_model), nn.GELU(),
                         nn.Dropout(cfg.dropout), nn.Linear(2 * cfg.d_model, cfg.d_model))


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: EventsConfig):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.resid_drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q = q.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2)  # (B, h, T, hs)
        k = k.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2)
        v = v.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2)
        # No dropout on attention weights: it forces the slow materialised-softmax path on CPU.
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_drop(self.proj(y))


class MLP(nn.Module):
    def __init__(self, cfg: EventsConfig):
        super().__init__()
        self.fc = nn.Linear(cfg.d_model, 4 * cfg.d_model)
        self.proj = nn.Linear(4 * cfg.d_model, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    def __init__(self, cfg: EventsConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.d_model)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.d_model)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class EventsEncoder(nn.Module):
    def __init__(self, cfg: EventsConfig):
        super().__init__()
        assert cfg.vocab_size > 0, "set vocab_size from gold.vocab"
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model, padding_idx=0)
        self.pos_emb = nn.Embedding(cfg.max_seq_len, cfg.d_model)
        # age/100, log1p(gap in days)/10, normalised value, has-value flag -> d_model
        self.time_value = nn.Linear(4, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.n_layers)])
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.head.weight = self.tok_emb.weight  # weight tying
        self.when_head = nn.Linear(cfg.d_model, 1)  # log1p(days to the next event) / 10
        self.value_head = nn.Linear(cfg.d_model, 1)  # the next event's value-bin position
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layers))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def configure_optimizers(self, weight_decay: float, learning_rate: float) -> torch.optim.AdamW:
        """AdamW that decays matrices and embeddings only: norms and biases keep their scale."""
        params = [p for p in self.parameters() if p.requires_grad]  # the tied head counted once
        groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
                  {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=learning_rate)

    def hidden(
        self, tokens: torch.Tensor, ages: torch.Tensor, deltas: torch.Tensor,
        values: torch.Tensor, has_value: torch.Tensor,
    ) -> torch.Tensor:
        """(B, T) inputs -> (B, T, d_model) hidden states, each from its own and earlier events."""
        B, T = tokens.shape
        assert T <= self.cfg.max_seq_len, f"sequence of {T} > max_seq_len {self.cfg.max_seq_len}"
        pos = torch.arange(T, device=tokens.device)
        extra = torch.stack(
            [ages / 100.0, torch.log1p(deltas.clamp(min=0)) / 10.0, values, has_value], dim=-1
        )  # (B, T, 4)
        x = self.drop(self.tok_emb(tokens) + self.pos_emb(pos) + self.time_value(extra))
        for block in self.blocks:
            x = block(x)
        return self.ln_f(x)

    def forward(
        self, tokens: torch.Tensor, ages: torch.Tensor, deltas: torch.Tensor,
        values: torch.Tensor, has_value: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Next-token logits (B, T, vocab) and the loss over non-padding targets: next-token cross
        entropy plus the squared errors of the next event's gap and (where it has one) value."""
        h = self.hidden(tokens, ages, deltas, values, has_value)
        logits = self.head(h)
        real = tokens[:, 1:] != 0
        targets = tokens[:, 1:].masked_fill(~real, -100)
        loss = F.cross_entropy(
            logits[:, :-1].reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100
        )
        gap = torch.log1p(deltas[:, 1:].clamp(min=0)) / 10.0
        when = self.when_head(h[:, :-1]).squeeze(-1)
        loss = loss + _masked_mse(when, gap, real)
        value = self.value_head(h[:, :-1]).squeeze(-1)
        loss = loss + _masked_mse(value, values[:, 1:], real & (has_value[:, 1:] > 0))
        return logits, loss


def _masked_mse(predicted: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.float()
    return ((predicted - target) ** 2 * mask).sum() / mask.sum().clamp(min=1.0)
