"""A small decoder-only transformer in plain torch.

Pre-norm blocks (RMSNorm), causal `scaled_dot_product_attention`, rotary (RoPE) or learned
positions, a GELU MLP of 4x width, tied input and output embeddings. Sizes from about 1M to
about 100M parameters through `ModelConfig` (see `PRESETS`). Nothing here knows about data.
``dropout`` (default 0.0) drops attention weights and each residual branch's output (attention
and MLP) in train mode only; it draws from torch's RNG, which a resumed run must restore.

Attention never crosses a document in dataset-decomposition batches: every row of such a batch is
a chunk of one document, so the plain causal mask is the document mask. Concat-and-chunk rows span
documents, and attention crosses their boundaries, as in the concat-and-chunk baseline of
Pouransari et al. 2024 (arXiv:2405.13226).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    max_seq_len: int = 1024      # longest input (targets excluded); sizes the position table or RoPE cache
    positions: str = "rope"      # "rope" or "learned"
    mlp_ratio: int = 4
    dropout: float = 0.0
    rope_base: float = 10_000.0
    init_std: float = 0.02

    def __post_init__(self) -> None:
        if self.positions not in ("rope", "learned"):
            raise ValueError(f"model.positions: expected 'rope' or 'learned', got {self.positions!r}")
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "max_seq_len", "mlp_ratio"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"model.{name}: must be a positive integer, got {getattr(self, name)!r}")
        if self.d_model % self.n_heads:
            raise ValueError(f"model: d_model {self.d_model} is not a multiple of n_heads {self.n_heads}")
        if self.positions == "rope" and (self.d_model // self.n_heads) % 2:
            raise ValueError("model: RoPE needs an even head dimension (d_model / n_heads)")

    def to_dict(self) -> dict:
        return asdict(self)


# Sizes by name, vocabulary given at run time. Parameter counts at an 8,192-entry vocabulary:
# tiny 1.0M, small 5.2M, base 23M, large 91M (tied embeddings counted once; tiny is 0.42M at 2,048).
PRESETS: dict[str, dict] = {
    "tiny": {"d_model": 96, "n_layers": 2, "n_heads": 4},
    "small": {"d_model": 256, "n_layers": 4, "n_heads": 4},
    "base": {"d_model": 512, "n_layers": 6, "n_heads": 8},
    "large": {"d_model": 768, "n_layers": 12, "n_heads": 12},
}


def model_config(vocab_size: int, size: str | None = None, **overrides) -> ModelConfig:
    """A `ModelConfig` from a preset name (or none) and explicit fields, which win."""
    base: dict = {}
    if size is not None:
        if size not in PRESETS:
            raise ValueError(f"model.size: unknown {size!r}; expected one of {', '.join(PRESETS)}")
        base.update(PRESETS[size])
    base.update({k: v for k, v in overrides.items() if v is not None})
    return ModelConfig(vocab_size=vocab_size, **base)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


def _rope_tables(head_dim: int, length: int, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    inv = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    angles = torch.outer(torch.arange(length, dtype=torch.float64), inv)  # (T, hd/2)
    return angles.cos().float(), angles.sin().float()


def _apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # x: (B, H, T, hd); rotate pairs (even, odd) of the head dimension
    x1, x2 = x[..., 0::2], x[..., 1::2]
    out = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
    return out.flatten(-2).type_as(x)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_heads = cfg.n_heads
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.dropout = cfg.dropout

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        if rope is not None:
            cos, sin = rope[0][:t], rope[1][:t]
            q, k = _apply_rope(q, cos, sin), _apply_rope(k, cos, sin)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.norm1 = RMSNorm(cfg.d_model)
        self.attn = Attention(cfg)
        self.norm2 = RMSNorm(cfg.d_model)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.d_model, cfg.mlp_ratio * cfg.d_model, bias=False),
            nn.GELU(),
            nn.Linear(cfg.mlp_ratio * cfg.d_model, cfg.d_model, bias=False),
        )
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, rope) -> torch.Tensor:
        x = x + self.drop(self.attn(self.norm1(x), rope))
        return x + self.drop(self.mlp(self.norm2(x)))


class TransformerLM(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos = nn.Embedding(cfg.max_seq_len, cfg.d_model) if cfg.positions == "learned" else None
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.d_model)
        if cfg.positions == "rope":
            cos, sin = _rope_tables(cfg.d_model // cfg.n_heads, cfg.max_seq_len, cfg.rope_base)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init)
        # GPT-2's scaled init of the residual projections: std / sqrt(2 * layers)
        for block in self.blocks:
            for proj in (block.attn.proj, block.mlp[2]):
                nn.init.normal_(proj.weight, std=cfg.init_std / math.sqrt(2 * cfg.n_layers))

    def _init(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=self.cfg.init_std)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Logits (B, T, vocab) for input ids (B, T)."""
        t = idx.shape[1]
        if t > self.cfg.max_seq_len:
            raise ValueError(f"sequence of {t} tokens is longer than the model's max_seq_len {self.cfg.max_seq_len}")
        x = self.embed(idx)
        if self.pos is not None:
            x = x + self.pos(torch.arange(t, device=idx.device))
        rope = (self.rope_cos, self.rope_sin) if self.pos is None else None
        for block in self.blocks:
            x = block(x, rope)
        return F.linear(self.norm(x), self.embed.weight)  # tied output embedding

    def loss(self, batch: torch.Tensor, mask: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
        """Next-token cross-entropy of a (B, T+1) batch of ids: inputs batch[:, :-1], targets
        batch[:, 1:]. `mask` (B, T+1) marks real tokens (padding excluded from the loss)."""
        logits = self(batch[:, :-1])
        targets = batch[:, 1:]
        if mask is not None:
            targets = targets.masked_fill(~mask[:, 1:].bool(), -100)
        return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
                               ignore_index=-100, reduction=reduction)


def attention_flops(seq_len: int, cfg: ModelConfig) -> int:
    """Forward FLOPs of the attention scores and weighted sum for one causal sequence of
    `seq_len` inputs (QK^T and AV, each 2 * T^2 * d per layer, halved by the causal mask)."""
    return cfg.n_layers * 2 * seq_len * seq_len * cfg.d_model
